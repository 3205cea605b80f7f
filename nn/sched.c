/* sched.c: learning-rate schedules evaluated per epoch (nn_schedule). */
#include "nn_internal.h"

#include <math.h>

#define PI 3.14159265358979323846

/* ---- learning-rate schedules ---- */

nn_schedule nn_schedule_step(double base_lr, int64_t step_size, double gamma)
{
    return (nn_schedule){NN_SCHED_STEP, base_lr, step_size, gamma, 0, 0.0};
}

nn_schedule nn_schedule_cosine(double base_lr, int64_t t_max, double eta_min)
{
    return (nn_schedule){NN_SCHED_COSINE, base_lr, 0, 1.0, t_max, eta_min};
}

double nn_schedule_lr(const nn_schedule *s, int64_t epoch)
{
    if (!s) return 0.0;
    if (epoch < 0) epoch = 0;
    switch (s->kind) {
    case NN_SCHED_CONSTANT: break;
    case NN_SCHED_STEP:
        if (s->step_size > 0) return s->base_lr * pow(s->gamma, (double)(epoch / s->step_size));
        break;
    case NN_SCHED_COSINE:
        if (s->t_max <= 0 || epoch >= s->t_max) return s->t_max <= 0 ? s->base_lr : s->eta_min;
        return s->eta_min + (s->base_lr - s->eta_min) * (1.0 + cos(PI * (double)epoch / (double)s->t_max)) / 2.0;
    }
    return s->base_lr;
}
