/* The bodies of fused_neuron.c's kernels, included once per storage type with
 * T_IO (the tensors' element type), LOAD / STORE (to and from float) and
 * NAME(f) (the exported name) defined. fused_neuron.c says what they compute.
 *
 * Shapes: T steps; a time stride of 0 means one current held for T steps,
 * whose gradient is the sum over time. Every loop over neurons is branch-free
 * so that gcc vectorises it (check with -fopt-info-vec). */

/* ---- element-wise layers: N neurons ------------------------------------ */

void NAME(f2n_forward)(const T_IO *x, int64_t x_tstride, T_IO *spikes, int64_t T, int64_t N,
                       params_t p, int threads) {
    int64_t blocks = (N + BLOCK - 1) / BLOCK;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
        float v[BLOCK];
        int64_t i0 = b * BLOCK, n = N - i0 < BLOCK ? N - i0 : BLOCK;
        for (int64_t i = 0; i < n; ++i) v[i] = 0.0f;
        for (int64_t t = 0; t < T; ++t) {
            const T_IO *xt = x + t * x_tstride + i0;
            T_IO *st = spikes + t * N + i0;
            for (int64_t i = 0; i < n; ++i) {
                float h = p.beta * v[i] + LOAD(xt[i]) * p.scale;
                int s = h > p.theta;
                st[i] = STORE(s ? 1.0f : 0.0f);
                v[i] = s ? 0.0f : h;
            }
        }
    }
}

void NAME(f2n_backward)(const T_IO *x, int64_t x_tstride, const T_IO *grad_spikes, T_IO *grad_x,
                        int64_t T, int64_t N, params_t p, int threads) {
    int64_t blocks = (N + BLOCK - 1) / BLOCK;
    #pragma omp parallel num_threads(threads)
    {
        float *hs = (float *)malloc(sizeof(float) * (size_t)(T * BLOCK));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            float v[BLOCK], gv[BLOCK], acc[BLOCK];
            int64_t i0 = b * BLOCK, n = N - i0 < BLOCK ? N - i0 : BLOCK;
            for (int64_t i = 0; i < n; ++i) { v[i] = 0.0f; gv[i] = 0.0f; acc[i] = 0.0f; }
            for (int64_t t = 0; t < T; ++t) {              /* recompute the membranes */
                const T_IO *xt = x + t * x_tstride + i0;
                float *ht = hs + t * BLOCK;
                for (int64_t i = 0; i < n; ++i) {
                    float h = p.beta * v[i] + LOAD(xt[i]) * p.scale;
                    ht[i] = h;
                    v[i] = h > p.theta ? 0.0f : h;
                }
            }
            for (int64_t t = T - 1; t >= 0; --t) {         /* one reverse loop */
                const float *ht = hs + t * BLOCK;
                const T_IO *gst = grad_spikes + t * N + i0;
                if (x_tstride) {
                    T_IO *gxt = grad_x + t * N + i0;
                    for (int64_t i = 0; i < n; ++i) {
                        float gh = step_grad(ht[i], LOAD(gst[i]), gv[i], &p);
                        gxt[i] = STORE(gh * p.scale);
                        gv[i] = gh * p.beta;
                    }
                } else {
                    for (int64_t i = 0; i < n; ++i) {
                        float gh = step_grad(ht[i], LOAD(gst[i]), gv[i], &p);
                        acc[i] += gh * p.scale;
                        gv[i] = gh * p.beta;
                    }
                }
            }
            if (!x_tstride)
                for (int64_t i = 0; i < n; ++i) grad_x[i0 + i] = STORE(acc[i]);
        }
        free(hs);
    }
}

/* ---- IF layer + 2x2 max pool: x is (T or 1, P, H, W), H and W even ------
 * One unit of work is a pair of input rows (2W neurons), which makes one
 * output row of W/2 pooled neurons. */

void NAME(f2n_forward_pool)(const T_IO *x, int64_t x_tstride, T_IO *pooled, int64_t T,
                            int64_t P, int64_t H, int64_t W, params_t p, int threads) {
    int64_t rows = P * (H / 2), half_w = W / 2, out_t = rows * half_w;
    #pragma omp parallel num_threads(threads)
    {
        float *v = (float *)malloc(sizeof(float) * (size_t)(2 * W));
        float *s = (float *)malloc(sizeof(float) * (size_t)(2 * W));
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            int64_t base = (r / (H / 2)) * H * W + (r % (H / 2)) * 2 * W;
            for (int64_t j = 0; j < 2 * W; ++j) v[j] = 0.0f;
            for (int64_t t = 0; t < T; ++t) {
                const T_IO *xt = x + t * x_tstride + base;
                for (int64_t j = 0; j < 2 * W; ++j) {
                    float h = p.beta * v[j] + LOAD(xt[j]) * p.scale;
                    int fired = h > p.theta;
                    s[j] = fired ? 1.0f : 0.0f;
                    v[j] = fired ? 0.0f : h;
                }
                T_IO *ot = pooled + t * out_t + r * half_w;
                const float *top = s, *bottom = s + W;
                for (int64_t c = 0; c < half_w; ++c) {
                    float m = top[2 * c] > top[2 * c + 1] ? top[2 * c] : top[2 * c + 1];
                    float n = bottom[2 * c] > bottom[2 * c + 1] ? bottom[2 * c] : bottom[2 * c + 1];
                    ot[c] = STORE(m > n ? m : n);
                }
            }
        }
        free(v);
        free(s);
    }
}

void NAME(f2n_backward_pool)(const T_IO *x, int64_t x_tstride, const T_IO *grad_pooled,
                             T_IO *grad_x, int64_t T, int64_t P, int64_t H, int64_t W,
                             params_t p, int threads) {
    int64_t rows = P * (H / 2), half_w = W / 2, out_t = rows * half_w, in_t = P * H * W;
    #pragma omp parallel num_threads(threads)
    {
        float *hs = (float *)malloc(sizeof(float) * (size_t)(T * 2 * W));
        float *work = (float *)malloc(sizeof(float) * (size_t)(8 * W));
        float *v = work, *gv = work + 2 * W, *gs = work + 4 * W, *acc = work + 6 * W;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            int64_t base = (r / (H / 2)) * H * W + (r % (H / 2)) * 2 * W;
            for (int64_t j = 0; j < 2 * W; ++j) { v[j] = 0.0f; gv[j] = 0.0f; acc[j] = 0.0f; }
            for (int64_t t = 0; t < T; ++t) {              /* recompute the membranes */
                const T_IO *xt = x + t * x_tstride + base;
                float *ht = hs + t * 2 * W;
                for (int64_t j = 0; j < 2 * W; ++j) {
                    float h = p.beta * v[j] + LOAD(xt[j]) * p.scale;
                    ht[j] = h;
                    v[j] = h > p.theta ? 0.0f : h;
                }
            }
            for (int64_t t = T - 1; t >= 0; --t) {
                const float *top = hs + t * 2 * W, *bottom = top + W;
                const T_IO *gpt = grad_pooled + t * out_t + r * half_w;
                /* Route each window's gradient to its first maximal element in
                 * row-major order, as max_pool2d does: a, b / c, d. */
                for (int64_t c = 0; c < half_w; ++c) {
                    float g = LOAD(gpt[c]);
                    int a = top[2 * c] > p.theta, b = top[2 * c + 1] > p.theta;
                    int cc = bottom[2 * c] > p.theta, d = bottom[2 * c + 1] > p.theta;
                    gs[2 * c] = (a | !(b | cc | d)) ? g : 0.0f;
                    gs[2 * c + 1] = (!a & b) ? g : 0.0f;
                    gs[W + 2 * c] = (!a & !b & cc) ? g : 0.0f;
                    gs[W + 2 * c + 1] = (!a & !b & !cc & d) ? g : 0.0f;
                }
                if (x_tstride) {
                    T_IO *gxt = grad_x + t * in_t + base;
                    for (int64_t j = 0; j < 2 * W; ++j) {
                        float gh = step_grad(top[j], gs[j], gv[j], &p);
                        gxt[j] = STORE(gh * p.scale);
                        gv[j] = gh * p.beta;
                    }
                } else {
                    for (int64_t j = 0; j < 2 * W; ++j) {
                        float gh = step_grad(top[j], gs[j], gv[j], &p);
                        acc[j] += gh * p.scale;
                        gv[j] = gh * p.beta;
                    }
                }
            }
            if (!x_tstride)
                for (int64_t j = 0; j < 2 * W; ++j) grad_x[base + j] = STORE(acc[j]);
        }
        free(hs);
        free(work);
    }
}
