/* ad_nnops.h: internal helper ops of the convolution and pooling family (the adjoints their VJPs use); never installed. */
#ifndef AUTODIFF_AD_NNOPS_H
#define AUTODIFF_AD_NNOPS_H

#include "services.h"

/*
** Each helper is a full op in the table, with its own VJP, so that the VJPs of
** conv2d and the pools can be recorded (AD_CREATE_GRAPH) and differentiated
** again. Together they are closed under taking VJPs:
**   conv2d(x, w)              -> grad_input(gy, w), grad_weight(x, gy)
**   conv2d_grad_input(g, w)   -> conv2d(G, w), grad_weight(G, g)
**   conv2d_grad_weight(x, g)  -> grad_input(g, G), conv2d(x, G)
**   max_pool2d(x)             -> max_pool2d_grad(x, gy)
**   max_pool2d_grad(x, g)     -> max_pool2d_select(x, G)        (x only picks the argmax)
**   max_pool2d_select(x, g)   -> max_pool2d_grad(x, G)
**   avg_pool2d(x)             -> avg_pool2d_grad(gy)
**   avg_pool2d_grad(g)        -> avg_pool2d(G)
*/

/* dL/dx of y = conv2d(x, w) given g = dL/dy: the transposed convolution of g
** with w, shaped [N, C, h, w] (h, w: the input's height and width). */
AD_SHARED ad_var ad__conv2d_grad_input(ad_var g, ad_var w, int64_t h, int64_t wd, const ad_conv2d_params *p);
/* dL/dw of y = conv2d(x, w) given g = dL/dy, shaped [O, C/groups, kh, kw]. */
AD_SHARED ad_var ad__conv2d_grad_weight(ad_var x, ad_var g, int64_t kh, int64_t kw, const ad_conv2d_params *p);
/* g scattered to the argmax of each window of x (x: the pool's input). */
AD_SHARED ad_var ad__max_pool2d_grad(ad_var x, ad_var g, const ad_pool2d_params *p);
/* g (shaped like x) read at the argmax of each window of x: pooled shape. */
AD_SHARED ad_var ad__max_pool2d_select(ad_var x, ad_var g, const ad_pool2d_params *p);
/* g (pooled shape) spread evenly over each window: shaped [N, C, h, w]. */
AD_SHARED ad_var ad__avg_pool2d_grad(ad_var g, int64_t h, int64_t wd, const ad_pool2d_params *p);

#endif
