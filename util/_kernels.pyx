# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython layer kernels: im2col, col2im, direct convolution, max-pool forward/backward.

Each `def` function is a thin wrapper that checks its arguments, allocates the
output (or checks the `out` buffer it is given) and runs a `cdef ... noexcept
nogil` loop typed with the fused `floating` type (float32 or float64). The
plain-numpy twins in `util/kernels_numpy.py` define what each kernel computes;
tests compare the two on random data.

im2col layout: `cols[(c, i, j), (n, y, x)]`, shape `(C*HH*WW, N*Ho*Wo)`, so a
block of images is one GEMM `W.reshape(F, -1) @ cols`.

The loops are single-threaded on purpose: an OpenMP version (prange) was tried
and, with OpenBLAS's own threads waiting between the per-block GEMMs, made a
CNN training step 50x slower on a busy 2-core machine. BLAS owns the threads.
"""

import numpy as np

from cython cimport floating
from libc.string cimport memcpy, memset

from util import kernel_shapes as ks

cdef extern from *:
    """
    #ifndef SPARKNET_KERNELS_BUILD
    #define SPARKNET_KERNELS_BUILD "unknown"
    #endif
    """
    const char* SPARKNET_KERNELS_BUILD

# a hash of this file, compiled in by setup.py: executors must run the driver's build
BUILD = SPARKNET_KERNELS_BUILD.decode("ascii")


# --------------------------------------------------------------------------- helpers


cdef inline void _valid_range(Py_ssize_t j, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t W,
                              Py_ssize_t Wo, Py_ssize_t* x0, Py_ssize_t* x1) noexcept nogil:
    """[x0, x1): the outputs x whose input column x*s + j - pad lies inside 0..W-1."""
    cdef Py_ssize_t lo = pad - j, hi = W - 1 + pad - j
    x0[0] = 0 if lo <= 0 else (lo + s - 1) // s
    x1[0] = 0 if hi < 0 else hi // s + 1
    if x1[0] > Wo:
        x1[0] = Wo
    if x0[0] > x1[0]:
        x0[0] = x1[0]


# --------------------------------------------------------------------------- im2col


cdef inline void _fill_row(floating* dst, const floating* plane, Py_ssize_t iy, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t Wo, Py_ssize_t s, Py_ssize_t off,
                           Py_ssize_t x0, Py_ssize_t x1) noexcept nogil:
    """dst[x] = plane[iy, x*s + off] for x in 0..Wo-1, zero outside the plane."""
    cdef Py_ssize_t x
    cdef const floating* src
    if iy < 0 or iy >= H:
        memset(dst, 0, Wo * sizeof(floating))
        return
    src = plane + iy * W
    for x in range(x0):
        dst[x] = 0
    if s == 1:
        memcpy(dst + x0, src + x0 + off, (x1 - x0) * sizeof(floating))
    else:
        for x in range(x0, x1):
            dst[x] = src[x * s + off]
    for x in range(x1, Wo):
        dst[x] = 0


cdef inline void _im2col_cjn(const floating* plane, floating* cols, Py_ssize_t row_stride,
                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t HH, Py_ssize_t j,
                             Py_ssize_t s, Py_ssize_t pad, Py_ssize_t Ho,
                             Py_ssize_t Wo) noexcept nogil:
    """Rows (c, i, j), i = 0..HH-1, of one image plane; cols points at row (c, 0, j), image n."""
    cdef Py_ssize_t P = Ho * Wo, off = j - pad
    cdef Py_ssize_t i, y, x0, x1
    cdef floating* dst
    _valid_range(j, s, pad, W, Wo, &x0, &x1)
    for i in range(HH):
        dst = cols + i * row_stride
        if s == 1 and i > 0:
            # Row i is row i-1 moved up by one output row (stride 1): one long copy,
            # then only the last output row is new.
            memcpy(dst, dst - row_stride + Wo, (P - Wo) * sizeof(floating))
            _fill_row(dst + P - Wo, plane, Ho - 1 + i - pad, H, W, Wo, s, off, x0, x1)
        else:
            for y in range(Ho):
                _fill_row(dst + y * Wo, plane, y * s + i - pad, H, W, Wo, s, off, x0, x1)


cdef void _im2col(const floating[:, :, :, ::1] X, floating[:, ::1] cols,
                  Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t s, Py_ssize_t pad,
                  Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t N = X.shape[0], C = X.shape[1], H = X.shape[2], W = X.shape[3]
    cdef Py_ssize_t P = Ho * Wo, K = cols.shape[0], L = cols.shape[1]
    cdef Py_ssize_t t, c, j, n
    cdef const floating* x = &X[0, 0, 0, 0]
    cdef floating* out = &cols[0, 0]
    # Each (c, j, n) fills its own part of cols (rows (c, :, j), columns of image n).
    for t in range(C * WW * N):
        c = t // (WW * N)
        j = (t // N) % WW
        n = t % N
        _im2col_cjn(x + (n * C + c) * H * W, out + (c * HH * WW + j) * L + n * P, WW * L,
                    H, W, HH, j, s, pad, Ho, Wo)


def _im2col_run(const floating[:, :, :, ::1] X, floating[:, ::1] cols,
                Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t s, Py_ssize_t pad,
                Py_ssize_t Ho, Py_ssize_t Wo):
    with nogil:
        _im2col(X, cols, HH, WW, s, pad, Ho, Wo)


def im2col(X, HH, WW, stride, pad, out=None):
    """X: (N, C, H, W) float -> cols: (C*HH*WW, N*Ho*Wo), same dtype.

    `out`, if given, is a C-contiguous array of that shape and dtype that
    receives the result (and is returned).
    """
    ks.check_float("im2col: X", X)
    shape, Ho, Wo = ks.im2col_shape(X.shape, HH, WW, stride, pad)
    out = ks.output("im2col", out, shape, X.dtype)
    if out.size:
        _im2col_run(np.ascontiguousarray(X), out, HH, WW, stride, pad, Ho, Wo)
    return out


# --------------------------------------------------------------------------- col2im


cdef inline void _add_row(floating* plane, const floating* src, Py_ssize_t iy, Py_ssize_t H,
                          Py_ssize_t W, Py_ssize_t s, Py_ssize_t off, Py_ssize_t x0,
                          Py_ssize_t x1) noexcept nogil:
    """plane[iy, x*s + off] += src[x] for x in x0..x1-1 (nothing if row iy is padding)."""
    cdef Py_ssize_t x
    cdef floating* dst
    if iy < 0 or iy >= H:
        return
    dst = plane + iy * W
    if s == 1:
        for x in range(x0, x1):
            dst[x + off] += src[x]
    else:
        for x in range(x0, x1):
            dst[x * s + off] += src[x]


cdef inline void _col2im_cn(const floating* cols, floating* plane, floating* acc,
                           Py_ssize_t L, Py_ssize_t H, Py_ssize_t W, Py_ssize_t HH,
                           Py_ssize_t WW, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t Ho,
                           Py_ssize_t Wo) noexcept nogil:
    """Adds rows (c, i, j) of image n into its plane; cols points at row (c, 0, 0), image n."""
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t i, j, y, t, x0, x1, off
    cdef const floating* src
    cdef floating* a
    for j in range(WW):
        _valid_range(j, s, pad, W, Wo, &x0, &x1)
        off = j - pad
        if s == 1:
            # Stride 1: rows i of one (c, j) hit input rows shifted by i, so sum them
            # with long vector adds into acc (padded row y + i) first.
            memset(acc, 0, (P + (HH - 1) * Wo) * sizeof(floating))
            for i in range(HH):
                src = cols + (i * WW + j) * L
                a = acc + i * Wo
                for t in range(P):
                    a[t] += src[t]
            for y in range(Ho + HH - 1):
                _add_row(plane, acc + y * Wo, y - pad, H, W, s, off, x0, x1)
        else:
            for i in range(HH):
                src = cols + (i * WW + j) * L
                for y in range(Ho):
                    _add_row(plane, src + y * Wo, y * s + i - pad, H, W, s, off, x0, x1)


cdef void _col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] dX, floating[::1] scratch,
                  Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t s, Py_ssize_t pad,
                  Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t N = dX.shape[0], C = dX.shape[1], H = dX.shape[2], W = dX.shape[3]
    cdef Py_ssize_t P = Ho * Wo, L = cols.shape[1]
    cdef Py_ssize_t t, c, n
    cdef const floating* src = &cols[0, 0]
    cdef floating* dx = &dX[0, 0, 0, 0]
    cdef floating* plane
    # The adjoint of _im2col; each (c, n) owns one plane of dX.
    for t in range(C * N):
        c = t // N
        n = t % N
        plane = dx + (n * C + c) * H * W
        memset(plane, 0, H * W * sizeof(floating))
        _col2im_cn(src + c * HH * WW * L + n * P, plane, &scratch[0], L,
                   H, W, HH, WW, s, pad, Ho, Wo)


def _col2im_run(const floating[:, ::1] cols, floating[:, :, :, ::1] dX,
                floating[::1] scratch, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t s,
                Py_ssize_t pad, Py_ssize_t Ho, Py_ssize_t Wo):
    with nogil:
        _col2im(cols, dX, scratch, HH, WW, s, pad, Ho, Wo)


def col2im(cols, shape, HH, WW, stride, pad, out=None):
    """Adjoint of im2col: cols (C*HH*WW, N*Ho*Wo) -> dX of `shape` (N, C, H, W), summing overlaps.

    `out`, if given, is a C-contiguous array of `shape` and cols' dtype that
    receives the result (and is returned).
    """
    Ho, Wo = ks.check_cols(cols, shape, HH, WW, stride, pad)
    shape = tuple(shape)
    out = ks.output("col2im", out, shape, cols.dtype)
    if out.size:
        scratch = np.empty((Ho + HH - 1) * Wo, dtype=cols.dtype)  # stride 1 sums rows there
        _col2im_run(np.ascontiguousarray(cols), out, scratch, HH, WW, stride, pad, Ho, Wo)
    return out


# --------------------------------------------------------------------------- max-pool

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* c ? v : +0.0 without a branch (random data would mispredict half of them) and exact
       for any v, NaN and infinities included: v's bits and-ed with a mask of c. */
    static inline float sparknet_keep_f(int c, float v) {
        uint32_t u; memcpy(&u, &v, 4); u &= (uint32_t)0 - (uint32_t)c; memcpy(&v, &u, 4);
        return v;
    }
    static inline double sparknet_keep_d(int c, double v) {
        uint64_t u; memcpy(&u, &v, 8); u &= (uint64_t)0 - (uint64_t)c; memcpy(&v, &u, 8);
        return v;
    }
    """
    float keep_f "sparknet_keep_f"(int c, float v) noexcept nogil
    double keep_d "sparknet_keep_d"(int c, double v) noexcept nogil


cdef inline floating _keep(int c, floating v) noexcept nogil:
    """c ? v : 0, branch-free and exact (c is 0 or 1)."""
    if floating is float:
        return keep_f(c, v)
    else:
        return keep_d(c, v)



def _window_offsets(size, W):
    """Offset of window element k = i*size + j from the window's corner in a row of width W."""
    i, j = np.divmod(np.arange(size * size), size)
    return i * W + j


cdef void _maxpool_forward(const floating[:, :, :, ::1] X, floating[:, :, :, ::1] out,
                           int[:, :, :, ::1] argmax, Py_ssize_t size,
                           Py_ssize_t s, bint relu) noexcept nogil:
    cdef Py_ssize_t N = X.shape[0], C = X.shape[1], W = X.shape[3], Ho = out.shape[2]
    cdef Py_ssize_t n, c, y
    for n in range(N):
        for c in range(C):
            for y in range(Ho):
                _maxpool_row(&X[n, c, y * s, 0], W, size, s, &out[n, c, y, 0],
                             &argmax[n, c, y, 0], out.shape[3])
                if relu:
                    _relu_row(&out[n, c, y, 0], &argmax[n, c, y, 0], out.shape[3], size * size)


cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """Whether a later window element v replaces the running maximum `best`:
    the first maximum wins and a NaN beats any number (like numpy's argmax).
    Bitwise ops, no branches: on random data branches mispredict half the time."""
    return (v > best) | ((v != v) & (best == best))


cdef inline void _relu_row(floating* o, int* am, Py_ssize_t Wo, int nowhere) noexcept nogil:
    """ReLU on one pooled row: a maximum that is not positive becomes 0 (a NaN stays, as
    numpy's maximum keeps it) and its gradient goes nowhere (argmax `nowhere`)."""
    cdef Py_ssize_t x
    cdef floating m
    cdef int pos
    for x in range(Wo):
        m = o[x]
        pos = m > 0
        o[x] = _keep(pos | (m != m), m)
        am[x] = (am[x] & -pos) | (nowhere & (pos - 1))


cdef void _maxpool2x2(const floating[:, :, :, ::1] X, floating[:, :, :, ::1] out,
                      int[:, :, :, ::1] argmax, bint relu) noexcept nogil:
    """The common 2x2, stride 2 case as a tournament: (a, b), (c, d), then the winners.

    `b if b > a else a` keeps the first of equal values and compiles to maxss/maxps,
    without branches. A NaN would make that differ from numpy's argmax, so a row
    that holds one is redone by the generic loop.
    """
    cdef Py_ssize_t N = X.shape[0], C = X.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t W = X.shape[3]
    cdef Py_ssize_t n, c, y, x
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* o
    cdef int* am
    cdef floating a, b, cc, d, m1, m2
    cdef int t1, t2, t3, nan
    cdef Py_ssize_t nc
    for nc in range(N * C):
        n = nc // C
        c = nc % C
        for y in range(Ho):
            r0 = &X[n, c, 2 * y, 0]
            r1 = r0 + W
            o = &out[n, c, y, 0]
            am = &argmax[n, c, y, 0]
            nan = 0
            for x in range(Wo):
                a = r0[2 * x]
                b = r0[2 * x + 1]
                cc = r1[2 * x]
                d = r1[2 * x + 1]
                t1 = b > a
                m1 = b if b > a else a
                t2 = d > cc
                m2 = d if d > cc else cc
                t3 = m2 > m1
                o[x] = m2 if m2 > m1 else m1
                am[x] = t3 * (2 + t2) + (1 - t3) * t1
                nan = nan | (a != a) | (b != b) | (cc != cc) | (d != d)
            if nan:
                _maxpool_row(r0, W, 2, 2, o, am, Wo)
            if relu:
                _relu_row(o, am, Wo, 4)


cdef void _maxpool_row(const floating* row, Py_ssize_t W, Py_ssize_t size, Py_ssize_t s,
                       floating* o, int* am, Py_ssize_t Wo) noexcept nogil:
    """One output row of the generic loop (any window size and stride)."""
    cdef Py_ssize_t x, i, j
    cdef const floating* corner
    cdef floating v, best
    cdef int k, best_k
    for x in range(Wo):
        corner = row + x * s
        best = corner[0]
        best_k = 0
        k = 0
        for i in range(size):
            for j in range(size):
                v = corner[i * W + j]
                if _beats(v, best):
                    best = v
                    best_k = k
                k += 1
        o[x] = best
        am[x] = best_k


def _maxpool_forward_run(const floating[:, :, :, ::1] X, floating[:, :, :, ::1] out,
                         int[:, :, :, ::1] argmax, Py_ssize_t size, Py_ssize_t s, bint relu):
    with nogil:
        if size == 2 and s == 2:
            _maxpool2x2(X, out, argmax, relu)
        else:
            _maxpool_forward(X, out, argmax, size, s, relu)


def maxpool_forward(X, size, stride, relu=False, out=None, argmax=None):
    """X: (N, C, H, W) float -> out (N, C, Ho, Wo) of X's dtype, argmax (N, C, Ho, Wo) int32.

    argmax is the flat index `i * size + j` of the maximum inside each window;
    ties go to the first maximum in row-major window order (a NaN beats any number).
    relu: out is max(0, the maximum) and a window whose maximum is not positive has
    argmax size*size: its gradient goes nowhere. Written into `out`/`argmax` if given.
    """
    ks.check_float("maxpool_forward: X", X)
    pooled = ks.pool_shape(X.shape, size, stride)
    out = ks.output("maxpool_forward", out, pooled, X.dtype)
    argmax = ks.output("maxpool_forward", argmax, pooled, np.int32)
    if out.size:
        _maxpool_forward_run(np.ascontiguousarray(X), out, argmax, size, stride, relu)
    return out, argmax


cdef void _maxpool_backward(const floating[:, :, :, ::1] dout, const int[:, :, :, ::1] argmax,
                            floating[:, :, :, ::1] dX, const Py_ssize_t[::1] offs,
                            Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t N = dX.shape[0], C = dX.shape[1], H = dX.shape[2], W = dX.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3], nowhere = offs.shape[0] - 1
    cdef Py_ssize_t n, c, y, x, k
    cdef floating* plane
    cdef Py_ssize_t nc
    for nc in range(N * C):
        n = nc // C
        c = nc % C
        plane = &dX[n, c, 0, 0]
        memset(plane, 0, H * W * sizeof(floating))
        for y in range(Ho):
            for x in range(Wo):
                k = argmax[n, c, y, x]
                if k != nowhere:  # += because windows overlap when stride < size
                    plane[y * s * W + x * s + offs[k]] += dout[n, c, y, x]


cdef void _maxpool2x2_backward(const floating[:, :, :, ::1] dout,
                               const int[:, :, :, ::1] argmax,
                               floating[:, :, :, ::1] dX) noexcept nogil:
    """2x2, stride 2: every window's four values written at once (no memset, no scatter);
    the row and column that no window covers (odd H or W) are zeroed."""
    cdef Py_ssize_t N = dX.shape[0], C = dX.shape[1], H = dX.shape[2], W = dX.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t nc, y, x
    cdef floating* r0
    cdef floating* r1
    cdef const floating* d
    cdef const int* am
    cdef floating g
    cdef int k
    for nc in range(N * C):
        for y in range(Ho):
            r0 = &dX[nc // C, nc % C, 2 * y, 0]
            r1 = r0 + W
            d = &dout[nc // C, nc % C, y, 0]
            am = &argmax[nc // C, nc % C, y, 0]
            for x in range(Wo):
                g = d[x]
                k = am[x]
                r0[2 * x] = _keep(k == 0, g)
                r0[2 * x + 1] = _keep(k == 1, g)
                r1[2 * x] = _keep(k == 2, g)
                r1[2 * x + 1] = _keep(k == 3, g)
            if W > 2 * Wo:
                r0[W - 1] = 0
                r1[W - 1] = 0
        if H > 2 * Ho:
            memset(&dX[nc // C, nc % C, H - 1, 0], 0, W * sizeof(floating))


def _maxpool_backward_run(const floating[:, :, :, ::1] dout, const int[:, :, :, ::1] argmax,
                          floating[:, :, :, ::1] dX, const Py_ssize_t[::1] offs, Py_ssize_t s):
    with nogil:
        if s == 2 and offs.shape[0] == 5:
            _maxpool2x2_backward(dout, argmax, dX)
        else:
            _maxpool_backward(dout, argmax, dX, offs, s)


def maxpool_backward(dout, argmax, shape, size, stride, out=None):
    """Routes dout (N, C, Ho, Wo) to the argmax positions (none for argmax size*size);
    returns dX of `shape`, dout's dtype (written into `out` if given)."""
    ks.check_pool_backward(dout, argmax, shape, size, stride)
    N, C, H, W = shape
    dX = ks.output("maxpool_backward", out, (N, C, H, W), dout.dtype)
    if dX.size:
        offs = np.append(_window_offsets(size, W), -1).astype(np.intp)  # last: nowhere
        _maxpool_backward_run(
            np.ascontiguousarray(dout), np.ascontiguousarray(argmax), dX, offs, stride
        )
    return dX


# --------------------------------------------------------------------------- direct convolution
#
# Stride-1 convolution without im2col or BLAS. An output row is R lanes, a whole
# number of SIMD vectors: Wo rounded up, or G images side by side when a row is
# narrower than a vector (8 float32 values of an 8x8 image in a 16-lane AVX-512
# vector: G = 2). Both passes read a scratch copy S of a group's padded input:
#
# - padded (G == 1): S[c][yp][xp] = Xpad[n, c, yp, xp], rows Rin = R + WW - 1
#   long; output vector (y, q) reads S[c][y + i][q*L + j ...] (unaligned loads).
# - shifted (G > 1): S[c][j][yp][k*Wo + x] = Xpad[n_k, c, yp, x + j], one copy per
#   filter column j (an im2col along x only), so that the lanes of G images are
#   one contiguous vector of S at row y + i.
#
# Either way every output vector is a sum over (c, i, j) of a weight times one
# vector load: no bounds checks, no gathers (Layout, _pack_input).
#
# - forward: a register tile of FB filters x TB output vectors; per (c, i, j) it
#   loads TB input vectors, broadcasts FB weights and does FB*TB FMAs.
# - dW[f, c, i, j] = sum over (n, y, lanes) of dout * S shifted by (i, j): a tile of
#   FB filters x IB offsets i of lane-wise sums, kept in memory across calls and
#   summed across lanes once per block.
# - dX is the forward kernel on dout with flipped, transposed weights (conv_backward).
#
# The microkernels are C with GCC vector extensions, compiled three times: 64-byte
# vectors for AVX-512, 32-byte for AVX2+FMA, 16-byte for any CPU; the best one the
# CPU supports is chosen at run time (no -march flags needed). The tile sizes fit
# each instruction set's register file (32 zmm, 16 ymm/xmm).

cdef extern from *:
    """
    #include <stddef.h>

    /* O[f][t*L..] = bias[f] + sum_{c,i,j} Wk[(c,i,j)][f] * S[c*cs + i*is + j*js + off(t)..]
       for FB filters and all nvec (a multiple of TB) output vectors t of one group, where
       output vector t = (row t / vpr, vector t % vpr of the row) reads the input at
       off(t) = (t / vpr) * is + (t % vpr) * L. */
    #define SN_FWD(NAME, T, VB, FB, TB, ATTR)                                            \\
    ATTR static void NAME(const T* S, ptrdiff_t cs, ptrdiff_t is, ptrdiff_t js,          \\
                          ptrdiff_t vpr, const T* Wk, const T* bias, T* O, ptrdiff_t C,  \\
                          ptrdiff_t HH, ptrdiff_t WW, ptrdiff_t nvec, ptrdiff_t ostride) \\
    {                                                                                    \\
        typedef T V __attribute__((vector_size(VB), aligned(sizeof(T))));                \\
        enum { L = VB / sizeof(T) };                                                     \\
        for (ptrdiff_t t0 = 0; t0 < nvec; t0 += TB) {                                    \\
            V acc[FB][TB];                                                               \\
            ptrdiff_t off[TB];                                                           \\
            for (int v = 0; v < TB; v++)                                                 \\
                off[v] = (t0 + v) / vpr * is + (t0 + v) % vpr * L;                       \\
            for (int f = 0; f < FB; f++)                                                 \\
                for (int v = 0; v < TB; v++) acc[f][v] = bias[f] - (V){0};               \\
            const T* w = Wk;                                                             \\
            for (ptrdiff_t c = 0; c < C; c++)                                            \\
                for (ptrdiff_t i = 0; i < HH; i++)                                       \\
                    for (ptrdiff_t j = 0; j < WW; j++, w += FB) {                        \\
                        const T* s = S + c * cs + i * is + j * js;                       \\
                        V x[TB];                                                         \\
                        for (int v = 0; v < TB; v++) x[v] = *(const V*)(s + off[v]);     \\
                        for (int f = 0; f < FB; f++) {                                   \\
                            V wf = w[f] - (V){0};  /* a broadcast (x - 0 == x) */         \\
                            for (int v = 0; v < TB; v++) acc[f][v] += wf * x[v];         \\
                        }                                                                \\
                    }                                                                    \\
            for (int f = 0; f < FB; f++)                                                 \\
                for (int v = 0; v < TB; v++)                                             \\
                    *(V*)(O + f * ostride + (t0 + v) * L) = acc[f][v];                   \\
        }                                                                                \\
    }

    /* A[f][i][lanes] += sum over groups g, rows y < nrows and vectors q < vpr of
       D[g][f][(y*vpr + q)*L..] * S[g][(i + y)*is + q*L..], for FB filters and IB row
       offsets i (S already points at the first offset): lane-wise sums, so that the
       caller sums the lanes once per block, not once per call. */
    #define SN_DW(NAME, T, VB, FB, IB, ATTR)                                             \\
    ATTR static void NAME(const T* S, ptrdiff_t Sg, ptrdiff_t is, ptrdiff_t vpr,         \\
                          const T* D, ptrdiff_t Dg, ptrdiff_t Df, ptrdiff_t ngroups,     \\
                          ptrdiff_t nrows, T* A)                                         \\
    {                                                                                    \\
        typedef T V __attribute__((vector_size(VB), aligned(sizeof(T))));                \\
        enum { L = VB / sizeof(T) };                                                     \\
        V acc[FB][IB];                                                                   \\
        for (int f = 0; f < FB; f++)                                                     \\
            for (int i = 0; i < IB; i++) acc[f][i] = *(const V*)(A + (f * IB + i) * L);  \\
        /* rows innermost: the longest loop (vpr is 1 to 4) */                           \\
        for (ptrdiff_t g = 0; g < ngroups; g++)                                          \\
            for (ptrdiff_t q = 0; q < vpr; q++) {                                        \\
                const T* s = S + g * Sg + q * L;                                         \\
                const T* d = D + g * Dg + q * L;                                         \\
                for (ptrdiff_t y = 0; y < nrows; y++, s += is, d += vpr * L) {           \\
                    V dv[FB];                                                            \\
                    for (int f = 0; f < FB; f++) dv[f] = *(const V*)(d + f * Df);        \\
                    for (int i = 0; i < IB; i++) {                                       \\
                        V sv = *(const V*)(s + i * is);                                  \\
                        for (int f = 0; f < FB; f++) acc[f][i] += dv[f] * sv;            \\
                    }                                                                    \\
                }                                                                        \\
            }                                                                            \\
        for (int f = 0; f < FB; f++)                                                     \\
            for (int i = 0; i < IB; i++) *(V*)(A + (f * IB + i) * L) = acc[f][i];        \\
    }

    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    #define SN_X86 1
    #define SN_AVX512 __attribute__((target("avx512f,avx2,fma")))
    #define SN_AVX2 __attribute__((target("avx2,fma")))
    SN_FWD(sn_fwd_f32_avx512, float, 64, 4, 4, SN_AVX512)
    SN_FWD(sn_fwd_f64_avx512, double, 64, 4, 4, SN_AVX512)
    SN_DW(sn_dw_f32_avx512, float, 64, 4, 5, SN_AVX512)
    SN_DW(sn_dw_f64_avx512, double, 64, 4, 5, SN_AVX512)
    SN_FWD(sn_fwd_f32_avx2, float, 32, 4, 2, SN_AVX2)
    SN_FWD(sn_fwd_f64_avx2, double, 32, 4, 2, SN_AVX2)
    SN_DW(sn_dw_f32_avx2, float, 32, 2, 5, SN_AVX2)
    SN_DW(sn_dw_f64_avx2, double, 32, 2, 5, SN_AVX2)
    #else
    #define SN_X86 0
    #endif
    SN_FWD(sn_fwd_f32_generic, float, 16, 4, 2, )
    SN_FWD(sn_fwd_f64_generic, double, 16, 4, 2, )
    SN_DW(sn_dw_f32_generic, float, 16, 2, 5, )
    SN_DW(sn_dw_f64_generic, double, 16, 2, 5, )

    /* B[f] += the sum of the n values at D + f * n, for f < F (in float64): the bias
       gradient, from the packed dout while it is in cache (its padding lanes are zero).
       Four 16-byte vector sums, then their lanes: any CPU. */
    #define SN_SUMS(NAME, T)                                                             \
    static void NAME(const T* D, ptrdiff_t F, ptrdiff_t n, double* B)                    \
    {                                                                                    \
        typedef T V __attribute__((vector_size(16), aligned(sizeof(T))));                \
        enum { L = 16 / sizeof(T) };                                                     \
        for (ptrdiff_t f = 0; f < F; f++) {                                              \
            const T* d = D + f * n;                                                      \
            V a[4] = {{0}, {0}, {0}, {0}};                                               \
            ptrdiff_t i = 0;                                                             \
            for (; i + 4 * L <= n; i += 4 * L)                                           \
                for (int u = 0; u < 4; u++) a[u] += *(const V*)(d + i + u * L);          \
            double s = 0;                                                                \
            for (; i < n; i++) s += d[i];                                                \
            for (int u = 0; u < 4; u++)                                                  \
                for (int l = 0; l < L; l++) s += a[u][l];                                \
            B[f] += s;                                                                   \
        }                                                                                \
    }
    SN_SUMS(sn_sums_f32, float)
    SN_SUMS(sn_sums_f64, double)

    /* Instruction sets: 0 generic (16-byte vectors), 1 AVX2+FMA, 2 AVX-512F. */
    static int sn_best_isa(void)
    {
    #if SN_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return 2;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    #endif
        return 0;
    }

    /* The vector width in bytes and the tiles' sizes of an instruction set. */
    static void sn_isa_params(int isa, int* vbytes, int* fb, int* tb, int* dfb, int* dib)
    {
        *vbytes = isa == 2 ? 64 : isa == 1 ? 32 : 16;
        *fb = 4;
        *tb = isa == 2 ? 4 : 2;
        *dfb = isa == 2 ? 4 : 2;
        *dib = 5;
    }

    #if SN_X86
    #define SN_PICK(isa, base, ...)                                                      \\
        do {                                                                             \\
            if ((isa) == 2) base##_avx512(__VA_ARGS__);                                  \\
            else if ((isa) == 1) base##_avx2(__VA_ARGS__);                               \\
            else base##_generic(__VA_ARGS__);                                            \\
        } while (0)
    #else
    #define SN_PICK(isa, base, ...) base##_generic(__VA_ARGS__)
    #endif

    static void sn_fwd_f32(int isa, const float* S, ptrdiff_t cs, ptrdiff_t is, ptrdiff_t js,
                           ptrdiff_t vpr, const float* Wk, const float* bias, float* O, ptrdiff_t C,
                           ptrdiff_t HH, ptrdiff_t WW, ptrdiff_t nvec, ptrdiff_t ostride)
    { SN_PICK(isa, sn_fwd_f32, S, cs, is, js, vpr, Wk, bias, O, C, HH, WW, nvec, ostride); }
    static void sn_fwd_f64(int isa, const double* S, ptrdiff_t cs, ptrdiff_t is, ptrdiff_t js,
                           ptrdiff_t vpr, const double* Wk, const double* bias, double* O, ptrdiff_t C,
                           ptrdiff_t HH, ptrdiff_t WW, ptrdiff_t nvec, ptrdiff_t ostride)
    { SN_PICK(isa, sn_fwd_f64, S, cs, is, js, vpr, Wk, bias, O, C, HH, WW, nvec, ostride); }
    static void sn_dw_f32(int isa, const float* S, ptrdiff_t Sg, ptrdiff_t is, ptrdiff_t vpr,
                          const float* D, ptrdiff_t Dg, ptrdiff_t Df, ptrdiff_t ngroups,
                          ptrdiff_t nrows, float* A)
    { SN_PICK(isa, sn_dw_f32, S, Sg, is, vpr, D, Dg, Df, ngroups, nrows, A); }
    static void sn_dw_f64(int isa, const double* S, ptrdiff_t Sg, ptrdiff_t is, ptrdiff_t vpr,
                          const double* D, ptrdiff_t Dg, ptrdiff_t Df, ptrdiff_t ngroups,
                          ptrdiff_t nrows, double* A)
    { SN_PICK(isa, sn_dw_f64, S, Sg, is, vpr, D, Dg, Df, ngroups, nrows, A); }
    """
    int sn_best_isa() nogil
    void sn_isa_params(int isa, int* vbytes, int* fb, int* tb, int* dfb, int* dib) nogil
    void sn_fwd_f32(int isa, const float* S, Py_ssize_t cs, Py_ssize_t istride, Py_ssize_t js,
                    Py_ssize_t vpr, const float* Wk, const float* bias, float* O, Py_ssize_t C,
                    Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t nvec, Py_ssize_t ostride) nogil
    void sn_fwd_f64(int isa, const double* S, Py_ssize_t cs, Py_ssize_t istride, Py_ssize_t js,
                    Py_ssize_t vpr, const double* Wk, const double* bias, double* O, Py_ssize_t C,
                    Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t nvec, Py_ssize_t ostride) nogil
    void sn_dw_f32(int isa, const float* S, Py_ssize_t Sg, Py_ssize_t istride, Py_ssize_t vpr,
                   const float* D, Py_ssize_t Dg, Py_ssize_t Df, Py_ssize_t ngroups,
                   Py_ssize_t nrows, float* A) nogil
    void sn_sums_f32(const float* D, Py_ssize_t F, Py_ssize_t n, double* B) nogil
    void sn_sums_f64(const double* D, Py_ssize_t F, Py_ssize_t n, double* B) nogil
    void sn_dw_f64(int isa, const double* S, Py_ssize_t Sg, Py_ssize_t istride, Py_ssize_t vpr,
                   const double* D, Py_ssize_t Dg, Py_ssize_t Df, Py_ssize_t ngroups,
                   Py_ssize_t nrows, double* A) nogil


ISAS = ("generic", "avx2", "avx512")
# the best instruction set of this CPU, found once at import (a constant of the machine)
BEST_ISA = ISAS[sn_best_isa()]


cdef struct Layout:
    # where everything lies in the scratch buffers of one direct convolution (see above)
    int isa
    Py_ssize_t L, FB, TB, DFB, DIB  # lanes per vector; tile sizes of the instruction set
    Py_ssize_t G, R, vpr  # images side by side in an output row of R lanes, R / L vectors
    Py_ssize_t nvec, ostride  # output vectors per filter (whole tiles), their lanes
    Py_ssize_t Fpad  # filters in whole tiles
    bint shifted  # the input copied once per filter column j (G > 1), or padded once
    Py_ssize_t Hs, Rin  # input rows (per c, or per (c, j) when shifted) and their stride
    Py_ssize_t cs, js, Sg  # input strides per channel, per filter column, per group


cdef Layout _layout(str isa, Py_ssize_t itemsize, Py_ssize_t C, Py_ssize_t F, Py_ssize_t HH,
                    Py_ssize_t WW, Py_ssize_t Ho, Py_ssize_t Wo):
    cdef int vbytes, fb, tb, dfb, dib
    cdef Layout lay
    lay.isa = ISAS.index(isa)
    sn_isa_params(lay.isa, &vbytes, &fb, &tb, &dfb, &dib)
    lay.L, lay.FB, lay.TB, lay.DFB, lay.DIB = vbytes // itemsize, fb, tb, dfb, dib
    lay.G = max(1, lay.L // Wo)
    lay.R = (lay.G * Wo + lay.L - 1) // lay.L * lay.L
    lay.vpr = lay.R // lay.L
    lay.nvec = (Ho * lay.vpr + tb - 1) // tb * tb
    lay.ostride = lay.nvec * lay.L
    lay.Fpad = (F + 3) // 4 * 4  # a multiple of FB and DFB (4 or 2)
    # rows the forward's whole tiles and the dW's whole blocks of DIB offsets read
    lay.Hs = max((lay.nvec + lay.vpr - 1) // lay.vpr + HH - 1, (HH + dib - 1) // dib * dib + Ho - 1)
    lay.shifted = lay.G > 1
    if lay.shifted:
        lay.Rin, lay.js = lay.R, lay.Hs * lay.R
        lay.cs = WW * lay.js
    else:
        # a vector at the row's end reads WW - 1 lanes further
        lay.Rin, lay.js = lay.R + WW - 1, 1
        lay.cs = lay.Hs * lay.Rin
    lay.Sg = C * lay.cs
    return lay


cdef void _pack_shifted(const floating* X, Py_ssize_t nimg, Py_ssize_t C, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t WW, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Wo,
                        Py_ssize_t Hs, Py_ssize_t R, floating* S) noexcept nogil:
    """S[c][j][yp][k*Wo + x] = X[k, c, yp - ph, x + j - pw], zero outside X, k < nimg.

    Each row is written whole, zeros included, in one pass (no memset of S first)."""
    cdef Py_ssize_t k, c, j, yp, x, x0, x1
    cdef Py_ssize_t y0 = min(max(0, ph), Hs), y1 = max(y0, min(Hs, H + ph))
    cdef const floating* src
    cdef floating* row
    cdef floating* dst
    cdef floating tmp[256]
    cdef Py_ssize_t Rt = Wo + WW - 1  # a padded input row, at tmp + k * Rt
    if nimg * Rt <= 256 and pw >= 0 and Rt >= W + pw:
        _pack_shifted_rows(X, nimg, C, H, W, WW, ph, pw, Wo, Hs, R, S, tmp)
        return
    for c in range(C):
        for j in range(WW):
            row = S + (c * WW + j) * Hs * R
            memset(row, 0, y0 * R * sizeof(floating))
            memset(row + y1 * R, 0, (Hs - y1) * R * sizeof(floating))
            x0 = min(max(0, pw - j), Wo)
            x1 = max(x0, min(Wo, W + pw - j))
            for yp in range(y0, y1):
                dst = row + yp * R
                for k in range(nimg):
                    src = X + ((k * C + c) * H + yp - ph) * W + j - pw
                    for x in range(x0):
                        dst[x] = 0
                    for x in range(x0, x1):
                        dst[x] = src[x]
                    for x in range(x1, Wo):
                        dst[x] = 0
                    dst += Wo
                for x in range(nimg * Wo, R):  # missing images, lanes past the last
                    row[yp * R + x] = 0


cdef void _pack_shifted_rows(const floating* X, Py_ssize_t nimg, Py_ssize_t C, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t WW, Py_ssize_t ph, Py_ssize_t pw,
                             Py_ssize_t Wo, Py_ssize_t Hs, Py_ssize_t R, floating* S,
                             floating* tmp) noexcept nogil:
    """_pack_shifted through padded rows tmp[k][0 : Wo + WW - 1] (pw >= 0, the whole row
    fits): each of the WW shifted copies is then one plain copy of Wo values."""
    cdef Py_ssize_t k, c, j, yp, x
    cdef Py_ssize_t y0 = min(max(0, ph), Hs), y1 = max(y0, min(Hs, H + ph))
    cdef Py_ssize_t Rt = Wo + WW - 1
    cdef floating* row
    cdef floating* dst
    cdef const floating* src
    memset(tmp, 0, nimg * Rt * sizeof(floating))
    for c in range(C):
        for j in range(WW):
            row = S + (c * WW + j) * Hs * R
            memset(row, 0, y0 * R * sizeof(floating))
            memset(row + y1 * R, 0, (Hs - y1) * R * sizeof(floating))
        for yp in range(y0, y1):
            for k in range(nimg):
                src = X + ((k * C + c) * H + yp - ph) * W
                for x in range(W):
                    tmp[k * Rt + pw + x] = src[x]
            for j in range(WW):
                dst = S + ((c * WW + j) * Hs + yp) * R
                for k in range(nimg):
                    if Wo * sizeof(floating) == 32:  # the CNN's 8x8 float32 layer: one move
                        memcpy(dst + k * Wo, tmp + k * Rt + j, 32)
                    else:
                        for x in range(Wo):
                            dst[k * Wo + x] = tmp[k * Rt + j + x]
                for x in range(nimg * Wo, R):  # missing images, lanes past the last
                    dst[x] = 0


cdef void _pack_padded(const floating* X, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Hs, Py_ssize_t Rin,
                       floating* S) noexcept nogil:
    """S[c][yp][xp] = X[0, c, yp - ph, xp - pw], zero outside X: one image, padded once."""
    cdef Py_ssize_t c, yp, x
    cdef Py_ssize_t y0 = min(max(0, ph), Hs), y1 = max(y0, min(Hs, H + ph))
    cdef Py_ssize_t x0 = min(max(0, pw), Rin), x1 = max(x0, min(Rin, W + pw))
    cdef const floating* src
    cdef floating* dst
    for c in range(C):
        dst = S + c * Hs * Rin
        memset(dst, 0, y0 * Rin * sizeof(floating))
        memset(dst + y1 * Rin, 0, (Hs - y1) * Rin * sizeof(floating))
        for yp in range(y0, y1):
            src = X + (c * H + yp - ph) * W - pw
            for x in range(x0):
                dst[yp * Rin + x] = 0
            for x in range(x0, x1):
                dst[yp * Rin + x] = src[x]
            for x in range(x1, Rin):
                dst[yp * Rin + x] = 0


cdef inline void _pack_input(const floating* X, Py_ssize_t nimg, Py_ssize_t C, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t WW, Py_ssize_t ph, Py_ssize_t pw,
                             Py_ssize_t Wo, Layout* lay, floating* S) noexcept nogil:
    """One group's input in the layout's form (see Layout.shifted)."""
    if lay.shifted:
        _pack_shifted(X, nimg, C, H, W, WW, ph, pw, Wo, lay.Hs, lay.R, S)
    else:
        _pack_padded(X, C, H, W, ph, pw, lay.Hs, lay.Rin, S)


cdef void _conv_direct(const floating[:, :, :, ::1] X, const floating[:, ::1] Wk,
                       const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] S,
                       floating[::1] O, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t ph,
                       Py_ssize_t pw, Layout lay) noexcept nogil:
    cdef Py_ssize_t N = X.shape[0], C = X.shape[1], H = X.shape[2], W = X.shape[3]
    cdef Py_ssize_t F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t G = lay.G, R = lay.R, FB = lay.FB, K = C * HH * WW
    cdef Py_ssize_t g, n0, nimg, t, fb, f, k, y, x, ostride
    cdef const floating* src
    cdef floating* dst
    cdef floating* o
    # Whole output rows of one image, whole filter blocks: the tiles go straight into out.
    cdef bint direct = G == 1 and R == Wo and lay.nvec * lay.L == Ho * Wo and F % FB == 0
    for g in range((N + G - 1) // G):
        n0 = g * G
        nimg = min(G, N - n0)
        _pack_input(&X[n0, 0, 0, 0], nimg, C, H, W, WW, ph, pw, Wo, &lay, &S[0])
        for t in range((F + FB - 1) // FB):
            fb = t * FB
            o, ostride = (&out[n0, fb, 0, 0], Ho * Wo) if direct else (&O[fb * lay.ostride], lay.ostride)
            if floating is float:
                sn_fwd_f32(lay.isa, &S[0], lay.cs, lay.Rin, lay.js, lay.vpr, &Wk[t, 0], &bias[fb],
                           o, C, HH, WW, lay.nvec, ostride)
            else:
                sn_fwd_f64(lay.isa, &S[0], lay.cs, lay.Rin, lay.js, lay.vpr, &Wk[t, 0], &bias[fb],
                           o, C, HH, WW, lay.nvec, ostride)
        if direct:
            continue
        for k in range(nimg):
            for f in range(F):
                for y in range(Ho):
                    dst = &out[n0 + k, f, y, 0]
                    src = &O[f * lay.ostride + y * R + k * Wo]
                    for x in range(Wo):
                        dst[x] = src[x]


def _conv_direct_run(const floating[:, :, :, ::1] X, const floating[:, ::1] Wk,
                     const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] S,
                     floating[::1] O, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t ph,
                     Py_ssize_t pw, Layout lay):
    with nogil:
        _conv_direct(X, Wk, bias, out, S, O, HH, WW, ph, pw, lay)


def _isa(isa):
    if isa is None:
        return BEST_ISA
    if isa not in ISAS or ISAS.index(isa) > ISAS.index(BEST_ISA):
        raise ValueError(f"isa must be one of {ISAS[: ISAS.index(BEST_ISA) + 1]} here, got {isa!r}")
    return isa


def conv_direct(X, W, b, pad, out=None, isa=None):
    """Stride-1 cross-correlation: X (N, C, H, W), W (F, C, HH, WW), b (F,) -> (N, F, Ho, Wo).

    pad: an int >= 0, or a pair (pad_h, pad_w) of ints where a negative pad crops
    the input (dX of a convolution with pad > HH - 1 needs that); Ho = H + 2*pad_h
    - HH + 1 >= 1, the same for Wo. All arrays one float dtype. `out`, if given, is
    a C-contiguous array of the result's shape and dtype that receives it.
    isa: None for the best instruction set of this CPU, or one of ISAS (tests).
    """
    shape, ph, pw = ks.conv_direct_shape("conv_direct", X, W, b, pad)
    out = ks.output("conv_direct", out, shape, X.dtype)
    N, F, Ho, Wo = shape
    C, HH, WW = W.shape[1:]
    if out.size == 0:
        return out
    cdef Layout lay = _layout(_isa(isa), X.itemsize, C, F, HH, WW, Ho, Wo)
    # weights as [filter block][(c, i, j)][filter in block]: the kernel broadcasts FB in a row
    Wp = np.zeros((lay.Fpad, C * HH * WW), dtype=X.dtype)
    Wp[:F] = W.reshape(F, -1)
    Wk = np.ascontiguousarray(
        Wp.reshape(lay.Fpad // lay.FB, lay.FB, -1).transpose(0, 2, 1)
    ).reshape(lay.Fpad // lay.FB, -1)
    bias = np.zeros(lay.Fpad, dtype=X.dtype)
    bias[:F] = b
    S = np.empty(lay.Sg, dtype=X.dtype)
    O = np.empty(lay.Fpad * lay.ostride, dtype=X.dtype)
    _conv_direct_run(np.ascontiguousarray(X), Wk, bias, out, S, O, HH, WW, ph, pw, lay)
    return out


cdef void _pack_dout(const floating* dout, Py_ssize_t nimg, Py_ssize_t F, Py_ssize_t Ho,
                     Py_ssize_t Wo, Py_ssize_t Fpad, Py_ssize_t R, floating* D) noexcept nogil:
    """D[f][y*R + k*Wo + x] = dout[k, f, y, x], zero in the padding lanes and filters."""
    cdef Py_ssize_t k, f, y, x
    cdef const floating* src
    cdef floating* dst
    for f in range(F):
        for y in range(Ho):
            dst = D + (f * Ho + y) * R
            for k in range(nimg):
                src = dout + ((k * F + f) * Ho + y) * Wo
                for x in range(Wo):
                    dst[k * Wo + x] = src[x]
            for x in range(nimg * Wo, R):
                dst[x] = 0
    memset(D + F * Ho * R, 0, (Fpad - F) * Ho * R * sizeof(floating))


cdef void _conv_direct_dW(const floating[:, :, :, ::1] X, const floating[:, :, :, ::1] dout,
                          Py_ssize_t F, Py_ssize_t HH, Py_ssize_t WW, floating[::1] S,
                          floating[::1] D, floating[::1] A, double[::1] B, Py_ssize_t ph,
                          Py_ssize_t pw, Py_ssize_t chunk, Py_ssize_t rows,
                          Layout lay) noexcept nogil:
    """Packs `chunk` groups at a time (S and D stay in L2) and sweeps them `rows` output
    rows at a time, adding lane-wise into A[c][j][filter block][row-offset block][FB][IB][L]
    (the caller sums the lanes); B[f] gets the sum of dout[:, f] (db) as dout is packed."""
    cdef Py_ssize_t N = X.shape[0], C = X.shape[1], H = X.shape[2], W = X.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t G = lay.G, R = lay.R, L = lay.L, FB = lay.DFB, IB = lay.DIB
    cdef Py_ssize_t Sg = lay.Sg, Df = Ho * R, Dg = lay.Fpad * Ho * R
    cdef Py_ssize_t nfb = (F + FB - 1) // FB, nib = (HH + IB - 1) // IB, tile = FB * IB * L
    cdef Py_ssize_t ngroups = (N + G - 1) // G
    cdef Py_ssize_t tg, g0, ng, g, n0, ty, y0, nrows, c, j, tf, ti
    cdef floating* a
    cdef const floating* s
    memset(&A[0], 0, A.shape[0] * sizeof(floating))
    for tg in range((ngroups + chunk - 1) // chunk):
        g0 = tg * chunk
        ng = min(chunk, ngroups - g0)
        for g in range(ng):
            n0 = (g0 + g) * G
            _pack_input(&X[n0, 0, 0, 0], min(G, N - n0), C, H, W, WW, ph, pw, Wo, &lay,
                        &S[g * Sg])
            _pack_dout(&dout[n0, 0, 0, 0], min(G, N - n0), F, Ho, Wo, lay.Fpad, R, &D[g * Dg])
            if floating is float:
                sn_sums_f32(&D[g * Dg], F, Df, &B[0])
            else:
                sn_sums_f64(&D[g * Dg], F, Df, &B[0])
        for ty in range((Ho + rows - 1) // rows):
            y0 = ty * rows
            nrows = min(rows, Ho - y0)
            # one filter block's dout rows stay in L1 while the input streams past them
            for tf in range(nfb):
                for c in range(C):
                    for j in range(WW):
                        for ti in range(nib):
                            a = &A[(((c * WW + j) * nfb + tf) * nib + ti) * tile]
                            s = &S[c * lay.cs + j * lay.js + (ti * IB + y0) * lay.Rin]
                            if floating is float:
                                sn_dw_f32(lay.isa, s, Sg, lay.Rin, lay.vpr,
                                          &D[tf * FB * Df + y0 * R], Dg, Df, ng, nrows, a)
                            else:
                                sn_dw_f64(lay.isa, s, Sg, lay.Rin, lay.vpr,
                                          &D[tf * FB * Df + y0 * R], Dg, Df, ng, nrows, a)


def _conv_direct_dW_run(const floating[:, :, :, ::1] X, const floating[:, :, :, ::1] dout,
                        Py_ssize_t F, Py_ssize_t HH, Py_ssize_t WW, floating[::1] S,
                        floating[::1] D, floating[::1] A, double[::1] B, Py_ssize_t ph,
                        Py_ssize_t pw, Py_ssize_t chunk, Py_ssize_t rows, Layout lay):
    with nogil:
        _conv_direct_dW(X, dout, F, HH, WW, S, D, A, B, ph, pw, chunk, rows, lay)


# bytes of the dout rows of one filter block that the dW kernel sweeps over: they stay in
# L1 while the input streams from L2; the scratch of a sweep's groups stays in L2
DW_SWEEP_BYTES = 16 << 10
DW_SCRATCH_BYTES = 512 << 10


def conv_direct_dW(X, dout, HH, WW, pad, isa=None):
    """The weight and bias gradients of conv_direct: X (N, C, H, W), dout (N, F, Ho, Wo) ->
    dW (F, C, HH, WW), db (F,).

    dW[f, c, i, j] = sum over n, y, x of dout[n, f, y, x] * Xpad[n, c, y + i, x + j];
    db[f] = sum over n, y, x of dout[n, f, y, x] (summed in float64 as dout is packed for
    dW: no pass of its own). pad as in conv_direct. isa as in conv_direct.
    """
    shape, ph, pw = ks.conv_dW_shape("conv_direct_dW", X, dout, HH, WW, pad)
    N, C = X.shape[:2]
    F, Ho, Wo = dout.shape[1:]
    if N == 0 or 0 in shape:
        return np.zeros(shape, dtype=X.dtype), np.zeros(F, dtype=X.dtype)
    cdef Layout lay = _layout(_isa(isa), X.itemsize, C, F, HH, WW, Ho, Wo)
    row_bytes = lay.DFB * lay.R * X.itemsize  # one output row of D, one filter block
    rows = max(1, min(Ho, DW_SWEEP_BYTES // row_bytes))
    chunk = 1
    if rows == Ho:  # small images: several groups per sweep, so each call has work enough
        group_bytes = (lay.Sg + lay.Fpad * Ho * lay.R) * X.itemsize
        chunk = min(DW_SWEEP_BYTES // (row_bytes * Ho), DW_SCRATCH_BYTES // group_bytes)
        chunk = max(1, min(-(-N // lay.G), chunk))
    S = np.empty(chunk * lay.Sg, dtype=X.dtype)
    D = np.empty(chunk * lay.Fpad * Ho * lay.R, dtype=X.dtype)
    nfb, nib = -(-F // lay.DFB), -(-HH // lay.DIB)
    A = np.empty(C * WW * nfb * nib * lay.DFB * lay.DIB * lay.L, dtype=X.dtype)
    db = np.zeros(F, dtype=np.float64)
    _conv_direct_dW_run(
        np.ascontiguousarray(X), np.ascontiguousarray(dout), F, HH, WW, S, D, A, db, ph, pw,
        chunk, rows, lay,
    )
    # the lanes' sums (a matrix-vector product), then [c][j][tf][ti][f][i] -> (F, C, HH, WW)
    sums = A.reshape(-1, lay.L) @ np.ones(lay.L, dtype=X.dtype)
    sums = sums.reshape(C, WW, nfb, nib, lay.DFB, lay.DIB).transpose(2, 4, 0, 3, 5, 1)
    sums = sums.reshape(nfb * lay.DFB, C, nib * lay.DIB, WW)
    return np.ascontiguousarray(sums[:F, :, :HH]), db.astype(X.dtype)
