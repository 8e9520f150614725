"""Benchmarks and profiles: the training-step table against PyTorch and the BLAS limit
(`steps`), the kernels against their numpy twins (`layers`), the CNN's per-layer profile
(`profile_cnn`), sync against parameter averaging (`compare_modes`)."""
