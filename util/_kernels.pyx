# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython layer kernels: im2col, col2im, max-pool forward/backward.

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


def _window_offsets(size, W):
    """Offset of window element k = i*size + j from the window's corner in a row of width W."""
    i, j = np.divmod(np.arange(size * size), size)
    return i * W + j


cdef void _maxpool_forward(const floating[:, :, :, ::1] X, floating[:, :, :, ::1] out,
                           int[:, :, :, ::1] argmax, Py_ssize_t size,
                           Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t N = X.shape[0], C = X.shape[1], W = X.shape[3], Ho = out.shape[2]
    cdef Py_ssize_t n, c, y
    for n in range(N):
        for c in range(C):
            for y in range(Ho):
                _maxpool_row(&X[n, c, y * s, 0], W, size, s, &out[n, c, y, 0],
                             &argmax[n, c, y, 0], out.shape[3])


cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """Whether a later window element v replaces the running maximum `best`:
    the first maximum wins and a NaN beats any number (like numpy's argmax).
    Bitwise ops, no branches: on random data branches mispredict half the time."""
    return (v > best) | ((v != v) & (best == best))


cdef void _maxpool2x2(const floating[:, :, :, ::1] X, floating[:, :, :, ::1] out,
                      int[:, :, :, ::1] argmax) noexcept nogil:
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
                         int[:, :, :, ::1] argmax, Py_ssize_t size, Py_ssize_t s):
    with nogil:
        if size == 2 and s == 2:
            _maxpool2x2(X, out, argmax)
        else:
            _maxpool_forward(X, out, argmax, size, s)


def maxpool_forward(X, size, stride):
    """X: (N, C, H, W) float -> out (N, C, Ho, Wo) of X's dtype, argmax (N, C, Ho, Wo) int32.

    argmax is the flat index `i * size + j` of the maximum inside each window;
    ties go to the first maximum in row-major window order (a NaN beats any number).
    """
    ks.check_float("maxpool_forward: X", X)
    pooled = ks.pool_shape(X.shape, size, stride)
    out = np.empty(pooled, dtype=X.dtype)
    argmax = np.empty(pooled, dtype=np.int32)
    if out.size:
        _maxpool_forward_run(np.ascontiguousarray(X), out, argmax, size, stride)
    return out, argmax


cdef void _maxpool_backward(const floating[:, :, :, ::1] dout, const int[:, :, :, ::1] argmax,
                            floating[:, :, :, ::1] dX, const Py_ssize_t[::1] offs,
                            Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t N = dX.shape[0], C = dX.shape[1], H = dX.shape[2], W = dX.shape[3]
    cdef Py_ssize_t Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t n, c, y, x
    cdef floating* plane
    cdef Py_ssize_t nc
    for nc in range(N * C):
        n = nc // C
        c = nc % C
        plane = &dX[n, c, 0, 0]
        memset(plane, 0, H * W * sizeof(floating))
        for y in range(Ho):
            for x in range(Wo):
                # += because windows overlap when stride < size.
                plane[y * s * W + x * s + offs[argmax[n, c, y, x]]] += dout[n, c, y, x]


def _maxpool_backward_run(const floating[:, :, :, ::1] dout, const int[:, :, :, ::1] argmax,
                          floating[:, :, :, ::1] dX, const Py_ssize_t[::1] offs, Py_ssize_t s):
    with nogil:
        _maxpool_backward(dout, argmax, dX, offs, s)


def maxpool_backward(dout, argmax, shape, size, stride):
    """Routes dout (N, C, Ho, Wo) to the argmax positions; returns dX of `shape`, dout's dtype."""
    ks.check_pool_backward(dout, argmax, shape, size, stride)
    N, C, H, W = shape
    dX = np.empty((N, C, H, W), dtype=dout.dtype)
    if dX.size:
        offs = _window_offsets(size, W).astype(np.intp)
        _maxpool_backward_run(
            np.ascontiguousarray(dout), np.ascontiguousarray(argmax), dX, offs, stride
        )
    return dX
