/* Fused multi-step IF/LIF neurons of SPEC §2 for the CPU, float32 and bfloat16.
 *
 * The Python side (fer2neuro/model/kernels/__init__.py) builds this file with
 * gcc at first use and calls it through ctypes on tensors' data pointers; the
 * maths is fer2neuro/model/neuron_step.py, which the tests hold it to.
 *
 * Why a kernel: each neuron's time loop is independent of every other
 * neuron's, so one pass can keep a block of membranes in L1 for all T steps.
 * Written with torch ops, every step of every layer is a dozen passes over
 * memory, forward and backward; here the forward reads the input current once
 * and writes the spikes, and the backward recomputes the membranes from the
 * saved current (nothing else is saved) and writes the input gradient.
 *
 * The "_pool" variants fuse the 2x2/stride-2 max pool that follows each
 * convolutional IF layer: a max pool of binary spikes is an OR, and its
 * gradient goes, as in torch's max_pool2d, to the first maximal element of the
 * window in row-major order (the first spiking neuron, or the top-left one if
 * none spiked). The full-resolution spike map is then never written at all.
 *
 * Arithmetic matches torch's float32 ops: built with -ffp-contract=off, so
 * h = beta * v + x * scale rounds after each operation, as in snnTorch.
 * Inputs with a time stride of 0 are one current held for T steps (direct
 * encoding); their gradient is summed over time.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 256

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {   /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);   /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct {
    float beta, scale, theta, half_alpha, pi_half_alpha;
} params_t;

/* sigma'(h - theta) and the gradient of one step, from the gradient of its
 * spike (gs) and of its membrane after the reset (gv). */
static inline float step_grad(float h, float gs, float gv, const params_t *p) {
    float z = p->pi_half_alpha * (h - p->theta);
    float sg = p->half_alpha / (1.0f + z * z);
    float keep = h > p->theta ? 0.0f : 1.0f;        /* 1 - s */
    return gs * sg + gv * (keep - h * sg);
}

#define NAME(f) f##_f32
#define T_IO float
#define LOAD(a) (a)
#define STORE(a) (a)
#include "fused_neuron_impl.h"
#undef NAME
#undef T_IO
#undef LOAD
#undef STORE

#define NAME(f) f##_bf16
#define T_IO uint16_t
#define LOAD(a) bf16_to_f32(a)
#define STORE(a) f32_to_bf16(a)
#include "fused_neuron_impl.h"
