// Instruction-set regions of the kernel variant files: every function between LCX_ISA_BEGIN and
// LCX_ISA_END is compiled for the named x86 features (run-time dispatch picks the variant), in
// GCC (`#pragma GCC target`) and in clang (`#pragma clang attribute ... target`, which GCC
// lacks). Regions do not nest (clang would keep the outer features): end one before starting
// another, and name the whole feature list in each.
#pragma once

#define LCX_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define LCX_ISA_BEGIN(features) LCX_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define LCX_ISA_END LCX_PRAGMA(clang attribute pop)
#else
#define LCX_ISA_BEGIN(features) LCX_PRAGMA(GCC push_options) LCX_PRAGMA(GCC target(features))
#define LCX_ISA_END LCX_PRAGMA(GCC pop_options)
#endif
