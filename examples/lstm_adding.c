/* lstm_adding.c: an LSTM learns the adding problem (two marked numbers among 50) by backpropagation through time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nn.h"

/*
** The adding problem (Hochreiter & Schmidhuber, 1997): each step of a sequence
** of length T = 50 carries a number drawn from U(0, 1) and a marker; exactly
** two steps are marked, one in each half, and the target is the sum of their
** two numbers. Always answering the mean (1) gives an MSE of 2/12 = 0.167; the
** network must carry what it saw across up to 50 steps to do better.
**
** The model is an LSTM cell (hidden size 32) unrolled over the 50 steps on the
** tape, its last hidden state, and a linear read-out; Adam on the MSE with
** fresh random batches of 64. Exits 0 when the test MSE (1,000 held-out
** sequences) falls below 0.01. With AD_TEST_QUICK set (the valgrind run) it
** trains 20 steps and only asks the loss to be finite. Usage: lstm_adding [seed].
*/

enum { T = 50, BATCH = 64, HIDDEN = 32, NTEST = 1000, MAX_STEPS = 4000 };

/* Fills x [n, T, 2] and y [n, 1] with n fresh sequences. */
static void make_batch(ad_rng *rng, ad_tensor *x, ad_tensor *y, int64_t n)
{
    float *xp = x->data, *yp = y->data;
    for (int64_t b = 0; b < n; b++) {
        int64_t m1 = (int64_t)ad_rng_below(rng, T / 2), m2 = T / 2 + (int64_t)ad_rng_below(rng, T / 2);
        float s = 0;
        for (int64_t k = 0; k < T; k++) {
            float v = (float)ad_rng_uniform(rng);
            bool marked = k == m1 || k == m2;
            xp[(b * T + k) * 2] = v;
            xp[(b * T + k) * 2 + 1] = marked ? 1.0f : 0.0f;
            if (marked) s += v;
        }
        yp[b] = s;
    }
}

/* The mean squared error of net on (x, y), with gradients off. */
static double evaluate(nn_module *net, ad_tape *t, const ad_tensor *x, const ad_tensor *y)
{
    ad_tape_reset(t);
    bool was = ad_tape_set_grad_enabled(t, false);
    double mse = ad_item(nn_loss_mse(nn_forward(net, t, ad_const(t, x)), ad_const(t, y)));
    ad_tape_set_grad_enabled(t, was);
    return mse;
}

int main(int argc, char **argv)
{
    bool quick = getenv("AD_TEST_QUICK") != NULL;
    ad_rng rng;
    ad_rng_seed(&rng, argc > 1 ? strtoull(argv[1], NULL, 10) : 7);
    nn_module *net = nn_sequential(3, (nn_module *[]){nn_lstm_cell(2, HIDDEN, &rng, NULL), nn_last_step(NULL),
                                                     nn_linear_ex(HIDDEN, 1, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F32, &rng, NULL)}, NULL);
    nn_optim *opt = net ? nn_adam(net, 3e-3, 0.9, 0.999, 1e-8, 0.0, NULL) : NULL;
    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(BATCH, T, 2)), *y = ad_tensor_new(AD_F32, AD_SHAPE(BATCH, 1));
    ad_tensor *tx = ad_tensor_new(AD_F32, AD_SHAPE(NTEST, T, 2)), *ty = ad_tensor_new(AD_F32, AD_SHAPE(NTEST, 1));
    nn_error err = {0};
    ad_tape *t = ad_tape_new();
    if (!opt || !x || !y || !tx || !ty || !t) {
        fprintf(stderr, "lstm_adding: out of memory\n");
        return 1;
    }
    ad_rng data;
    ad_rng_seed(&data, 1000);
    make_batch(&data, tx, ty, NTEST); /* the test set, never trained on */
    printf("adding problem, T = %d: predicting the mean gives MSE %.4f on the test set\n", T, 2.0 / 12.0);

    int status = 1, steps = quick ? 20 : MAX_STEPS, step;
    double mse = evaluate(net, t, tx, ty), first = mse;
    bool tty = isatty(fileno(stdout)); /* then nn_fit's bar, with samples/s and time left, between reports */
    nn_progress_bar bar;
    for (step = 1; step <= steps; step++) {
        if (tty && step % 100 == 1) nn_progress_start(&bar, stdout, "steps", 100);
        make_batch(&data, x, y, BATCH);
        ad_tape_reset(t);
        ad_var loss = nn_loss_mse(nn_forward(net, t, ad_const(t, x)), ad_const(t, y));
        if (nn_train_step(opt, loss, NULL, NULL, &err) != AD_OK) {
            fprintf(stderr, "lstm_adding: step %d: %s\n", step, err.message);
            goto done;
        }
        if (tty) nn_progress_update(&bar, (step - 1) % 100 + 1, (int64_t)((step - 1) % 100 + 1) * BATCH, ad_item(loss));
        if (step % 100 == 0 || step == steps) {
            if (tty) nn_progress_clear(&bar);
            double train = ad_item(loss); /* read before evaluate() resets the tape */
            mse = evaluate(net, t, tx, ty);
            printf("step %5d  train loss %.5f  test MSE %.5f\n", step, train, mse);
            fflush(stdout);
            if (mse < 0.01 && !quick) break;
        }
    }
    mse = evaluate(net, t, tx, ty);
    printf("test MSE %.5f after %d steps (the mean guess: %.4f)\n", mse, step > steps ? steps : step, 2.0 / 12.0);
    status = quick ? !(isfinite(mse) && isfinite(first)) : !(mse < 0.01);
done:
    nn_optim_free(opt);
    nn_module_free(net);
    ad_tensor_free(x);
    ad_tensor_free(y);
    ad_tensor_free(tx);
    ad_tensor_free(ty);
    ad_tape_free(t);
    return status;
}
