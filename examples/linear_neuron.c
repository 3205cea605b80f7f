/* linear_neuron.c: one linear neuron fits a noisy linear relation by the delta rule (least mean squares). */
#include <math.h>
#include <stdio.h>

#include "nn.h"

/*
** Data: y = 3 x0 - 2 x1 + 0.5 plus a little noise, x uniform in [-1, 1).
** Model: a single linear neuron y = w . x + b (nn_linear with two inputs and
** one output). Training: squared error and gradient descent on mini-batches,
** which for one linear neuron is Widrow and Hoff's delta rule:
** w += lr (t - y) x. Exits 0 only if the learned w and b are within 0.05 of
** the true ones.
*/
int main(void)
{
    enum { N = 256, BATCH = 32 };
    const double w_true[2] = {3.0, -2.0}, b_true = 0.5;
    ad_rng rng;
    ad_rng_seed(&rng, 2024);

    ad_tensor *x = ad_tensor_new(AD_F32, AD_SHAPE(N, 2));
    ad_tensor *y = ad_tensor_new(AD_F32, AD_SHAPE(N, 1));
    nn_module *neuron = nn_linear_ex(2, 1, true, NN_INIT_ZEROS, 0, AD_F32, NULL, NULL);
    nn_optim *sgd = neuron ? nn_sgd(neuron, 0.1, 0.0, 0.0, false, NULL) : NULL;
    nn_error err = {0};
    ad_tape *tape = ad_tape_new();
    if (!x || !y || !neuron || !sgd || !tape) {
        fprintf(stderr, "linear_neuron: out of memory\n");
        return 1;
    }
    ad_rng_fill_uniform(&rng, x, -1.0, 1.0);
    for (int i = 0; i < N; i++) {
        double v = w_true[0] * ad_tensor_get(x, 2 * i) + w_true[1] * ad_tensor_get(x, 2 * i + 1) + b_true;
        ad_tensor_set(y, i, v + 0.01 * ad_rng_normal(&rng));
    }

    int status = 0;
    for (int epoch = 0; epoch < 100 && status == 0; epoch++) {
        double sum = 0;
        for (int start = 0; start < N; start += BATCH) {
            /* views of rows [start, start + BATCH) of the data */
            ad_tensor xb = *x, yb = *y;
            xb.shape[0] = yb.shape[0] = BATCH;
            xb.size = 2 * BATCH;
            yb.size = BATCH;
            xb.data = (float *)x->data + 2 * start;
            yb.data = (float *)y->data + start;
            ad_tape_reset(tape);
            ad_var e = nn_loss_squared_error(nn_forward(neuron, tape, ad_const(tape, &xb)), ad_const(tape, &yb));
            if (nn_train_step(sgd, e, NULL, NULL, &err) != AD_OK) {
                fprintf(stderr, "linear_neuron: %s\n", err.message);
                status = 1;
                break;
            }
            sum += ad_item(e);
        }
        if (epoch % 20 == 0) printf("epoch %3d  E = %.6f\n", epoch, sum / (N / BATCH));
    }

    const ad_tensor *w = nn_module_param(neuron, "weight")->value;
    const ad_tensor *b = nn_module_param(neuron, "bias")->value;
    double w0 = ad_tensor_get(w, 0), w1 = ad_tensor_get(w, 1), b0 = ad_tensor_get(b, 0);
    printf("learned w = (%.4f, %.4f), b = %.4f; true w = (%g, %g), b = %g\n", w0, w1, b0, w_true[0], w_true[1],
           b_true);
    if (status == 0 && (fabs(w0 - w_true[0]) > 0.05 || fabs(w1 - w_true[1]) > 0.05 || fabs(b0 - b_true) > 0.05)) {
        fprintf(stderr, "linear_neuron: the neuron did not fit the data\n");
        status = 1;
    }

    ad_tape_free(tape);
    nn_optim_free(sgd);
    nn_module_free(neuron);
    ad_tensor_free(x);
    ad_tensor_free(y);
    return status;
}
