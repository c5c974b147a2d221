// Reference 2-D max and average pooling over one lane block [c][h][w][L] (no padding).
#include "ref.h"

namespace lenet::ref {

static inline ptrdiff_t at(const ConvShape* s, int c, int y, int x, int h, int w) {
    return ((ptrdiff_t(c) * h + y) * w + x) * s->lanes;
}

void maxpool_fwd(const ConvShape* s, const float* x, float* y, int relu) {
    for (int c = 0; c < s->ic; ++c)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < s->lanes; ++l) {
                    float best = x[at(s, c, oy * s->sh, ox * s->sw, s->ih, s->iw) + l];
                    for (int ky = 0; ky < s->kh; ++ky)
                        for (int kx = 0; kx < s->kw; ++kx) {
                            float v = x[at(s, c, oy * s->sh + ky, ox * s->sw + kx, s->ih, s->iw) + l];
                            if (v > best) best = v;
                        }
                    y[at(s, c, oy, ox, s->oh, s->ow) + l] = relu && best < 0.0f ? 0.0f : best;
                }
}

// The gradient goes to the first window position (row-major) whose value equals the max; with the fused ReLU,
// only where the output is positive.
void maxpool_bwd(const ConvShape* s, const float* x, const float* y, const float* dy, float* dx, int relu) {
    const bool tile = pool_windows_tile(s);
    for (int c = 0; c < s->ic; ++c)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < s->lanes; ++l) {
                    const ptrdiff_t o = at(s, c, oy, ox, s->oh, s->ow) + l;
                    bool done = relu && !(y[o] > 0.0f);
                    for (int ky = 0; ky < s->kh; ++ky)
                        for (int kx = 0; kx < s->kw; ++kx) {
                            const ptrdiff_t i = at(s, c, oy * s->sh + ky, ox * s->sw + kx, s->ih, s->iw) + l;
                            const bool hit = !done && x[i] == y[o];
                            if (tile) dx[i] = hit ? dy[o] : 0.0f;
                            else if (hit) dx[i] += dy[o];
                            done = done || hit;
                        }
                }
}

void avgpool_fwd(const ConvShape* s, const float* x, float* y) {
    const float inv = 1.0f / float(s->kh * s->kw);
    for (int c = 0; c < s->ic; ++c)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < s->lanes; ++l) {
                    float acc = 0.0f;
                    for (int ky = 0; ky < s->kh; ++ky)
                        for (int kx = 0; kx < s->kw; ++kx)
                            acc += x[at(s, c, oy * s->sh + ky, ox * s->sw + kx, s->ih, s->iw) + l];
                    y[at(s, c, oy, ox, s->oh, s->ow) + l] = acc * inv;
                }
}

void avgpool_bwd(const ConvShape* s, const float* dy, float* dx) {
    const float inv = 1.0f / float(s->kh * s->kw);
    const bool tile = pool_windows_tile(s);
    for (int c = 0; c < s->ic; ++c)
        for (int oy = 0; oy < s->oh; ++oy)
            for (int ox = 0; ox < s->ow; ++ox)
                for (int l = 0; l < s->lanes; ++l) {
                    const float g = dy[at(s, c, oy, ox, s->oh, s->ow) + l] * inv;
                    for (int ky = 0; ky < s->kh; ++ky)
                        for (int kx = 0; kx < s->kw; ++kx) {
                            float& d = dx[at(s, c, oy * s->sh + ky, ox * s->sw + kx, s->ih, s->iw) + l];
                            d = tile ? g : d + g;
                        }
                }
}

}  // namespace lenet::ref
