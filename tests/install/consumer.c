/* consumer.c: a program outside this project using the installed library (CMake) or the source tree (meson subproject). */
#include <autodiff/ad.h>
#include <autodiff/nn.h>
#include <stdio.h>

/* Trains a 2-4-1 logistic network on XOR for 2,000 steps; exits 0 when it learned it. */
int main(void)
{
    static const float xs[8] = {0, 0, 0, 1, 1, 0, 1, 1}, ts[4] = {0, 1, 1, 0};
    ad_rng rng;
    ad_rng_seed(&rng, 1);
    nn_error e;
    nn_module *net = nn_mlp(3, (const int64_t[]){2, 4, 1}, NN_TANH, &rng, &e);
    nn_optim *opt = net ? nn_optim_for("adam", net, NULL, &e) : NULL;
    ad_tensor *x = ad_tensor_from(AD_F32, AD_SHAPE(4, 2), xs), *t = ad_tensor_from(AD_F32, AD_SHAPE(4, 1), ts);
    ad_tape *tape = ad_tape_new();
    if (!opt || !x || !t || !tape) return fprintf(stderr, "consumer: %s\n", e.message), 1;
    nn_optim_set_lr(opt, 0.05);
    double loss = 1;
    for (int step = 0; step < 2000; step++) {
        ad_tape_reset(tape);
        ad_var y = ad_sigmoid(nn_forward(net, tape, ad_const(tape, x)));
        nn_step_result r;
        if (nn_train_step(opt, nn_loss_squared_error(y, ad_const(tape, t)), NULL, &r, &e) != AD_OK)
            return fprintf(stderr, "consumer: %s\n", e.message), 1;
        loss = r.loss;
    }
    printf("consumer: XOR learned, squared error %.5f\n", loss);
    ad_tape_free(tape);
    ad_tensor_free(x);
    ad_tensor_free(t);
    nn_optim_free(opt);
    nn_module_free(net);
    return loss < 0.01 ? 0 : 1;
}
