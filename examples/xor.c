/* xor.c: a 2-2-1 network of logistic neurons learns XOR by plain gradient descent on the squared error. */
#include <stdio.h>
#include <stdlib.h>

#include "nn.h"

/*
** The classic demonstration that a hidden layer lets a network compute a
** function no single neuron can (Rumelhart, Hinton and Williams, 1986): two
** logistic hidden neurons and one logistic output neuron, trained on the four
** XOR patterns with the squared error E = 1/2 sum (t - y)^2 and gradient descent
** w -= lr dE/dw, the whole batch each step. Exits 0 only if every output ends
** within 0.1 of its target. Usage: xor [seed].
*/
int main(int argc, char **argv)
{
    const float inputs[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    const float targets[4][1] = {{0}, {1}, {1}, {0}};
    ad_rng rng;
    ad_rng_seed(&rng, argc > 1 ? strtoull(argv[1], NULL, 10) : 1); /* optional: another seed */

    nn_module *net = nn_sequential(4, (nn_module *[]){
                                          nn_linear_ex(2, 2, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F32, &rng, NULL),
                                          nn_activation(NN_SIGMOID, NULL),
                                          nn_linear_ex(2, 1, true, NN_INIT_XAVIER_UNIFORM, 0, AD_F32, &rng, NULL),
                                          nn_activation(NN_SIGMOID, NULL),
                                      }, NULL);
    nn_optim *sgd = net ? nn_sgd(net, 2.0, 0.0, 0.0, false, NULL) : NULL;
    ad_tensor *x = ad_tensor_from(AD_F32, AD_SHAPE(4, 2), inputs);
    ad_tensor *t = ad_tensor_from(AD_F32, AD_SHAPE(4, 1), targets);
    nn_error err = {0};
    ad_tape *tape = ad_tape_new();
    if (!net || !sgd || !x || !t || !tape) {
        fprintf(stderr, "xor: out of memory\n");
        return 1;
    }

    int status = 0;
    double loss = 0;
    for (int epoch = 0; epoch < 5000; epoch++) {
        ad_tape_reset(tape);
        ad_var y = nn_forward(net, tape, ad_const(tape, x));
        ad_var e = nn_loss_squared_error(y, ad_const(tape, t));
        if (nn_train_step(sgd, e, NULL, NULL, &err) != AD_OK) {
            fprintf(stderr, "xor: %s\n", err.message);
            status = 1;
            break;
        }
        loss = ad_item(e);
        if (epoch % 1000 == 0) printf("epoch %4d  E = %.6f\n", epoch, loss);
    }

    /* the trained network on the four patterns, gradients off */
    ad_tape_reset(tape);
    ad_tape_set_grad_enabled(tape, false);
    ad_var y = nn_forward(net, tape, ad_const(tape, x));
    printf("final E = %.6f\n", loss);
    for (int i = 0; status == 0 && i < 4; i++) {
        double out = ad_tensor_get(ad_value(y), i);
        printf("%g XOR %g -> %.4f (target %g)\n", inputs[i][0], inputs[i][1], out, targets[i][0]);
        if (!(out > targets[i][0] - 0.1 && out < targets[i][0] + 0.1)) status = 1;
    }
    if (status) fprintf(stderr, "xor: the network did not learn XOR\n");

    ad_tape_free(tape);
    ad_tensor_free(x);
    ad_tensor_free(t);
    nn_optim_free(sgd);
    nn_module_free(net);
    return status;
}
