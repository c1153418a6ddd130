"""Benchmark of the tangent-kernel Gram K[i, j, c, d] = ⟨∇_θ f_c(x_i), ∇_θ f_d(x_j)⟩ (chapter ``sgd-svm``, issue 17).

Run: ``python benchmarks/tangent_kernel_gram.py`` (one thread; ``--threads`` to change, ``--quick`` for a smaller
memory test). Prints, for an MLP 64→128→128→10 (tanh) at n = 256, C = 10, float32:
  * the reference: a Python loop of ``torch.autograd.grad`` over samples and outputs (the (n·C, P) Jacobian),
    followed by one matrix product J Jᵀ;
  * the per-sample Jacobian by ``vmap(jacrev)`` contracted over P (``method="jacobian"``);
  * the factorised Gram Σ_l (A Aᵀ + 1) ⊙ (Δ Δᵀ) (``method="factorised"``, kitlib.tangent_kernel);
and the peak memory of the Gram at n = 2000 (a fresh subprocess per method; resident-set growth on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU) beside the size of the output itself.
Target (issue 17): factorised ≥ 20× faster than the loop + product, on one thread.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kitlib.path_kernel import per_sample_jacobian_loop, tangent_kernel_gram  # noqa: E402


def mlp(seed: int = 0) -> nn.Module:
    """The issue's model: 64 → 128 → 128 → 10, tanh."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))


def loop_gram(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: (n, C, P) Jacobian by a loop of autograd.grad, then one (n·C, P) × (P, n·C) product."""
    jacobian = per_sample_jacobian_loop(model, x)
    flat = jacobian.reshape(-1, jacobian.shape[-1])
    n, c = jacobian.shape[:2]
    return (flat @ flat.T).view(n, c, n, c).permute(0, 2, 1, 3)


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(n: int = 256, repeat: int = 3) -> dict:
    model = mlp()
    x = torch.rand(n, 64)
    tangent_kernel_gram(model, x[:8], x[:8], method="factorised")          # warm-ups
    tangent_kernel_gram(model, x[:8], x[:8], method="jacobian")
    reference = loop_gram(model, x)
    fast = tangent_kernel_gram(model, x, x, method="factorised")
    gap = float((fast - reference).abs().max() / reference.abs().max())
    return {"n": n, "loop_s": best_time(lambda: loop_gram(model, x), 1),
            "jacobian_s": best_time(lambda: tangent_kernel_gram(model, x, x, method="jacobian"), repeat),
            "factorised_s": best_time(lambda: tangent_kernel_gram(model, x, x, method="factorised"), repeat),
            "relative_gap": gap}


def _status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc (per address space: unlike ru_maxrss, not inherited from the
    parent across fork + exec); ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_child(method: str, n: int, device: str) -> dict:
    """Run in a fresh process: build the Gram once and report the peak memory it took."""
    torch.set_num_threads(1)
    model = mlp().to(device)
    x = torch.rand(n, 64, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_bytes("VmRSS")
    start = time.perf_counter()
    gram = tangent_kernel_gram(model, x, x, method=method)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_bytes("VmHWM") - base
    return {"method": method, "n": n, "seconds": time.perf_counter() - start, "peak_bytes": peak,
            "baseline_bytes": base, "output_bytes": gram.numel() * gram.element_size()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-n", type=int, default=2000)
    parser.add_argument("--methods", default="factorised",
                        help="methods for the memory test (jacobian: ~2 GiB and minutes on one CPU thread)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(peak_memory_child(args.child[0], int(args.child[1]), args.device)))
        return
    s = speed()
    params = sum(p.numel() for p in mlp().parameters())
    print(f"MLP 64→128→128→10, n = {s['n']}, C = 10, float32, {args.threads} thread(s):")
    print(f"  loop of autograd.grad + one product  {1e3 * s['loop_s']:8.0f} ms")
    print(f"  vmap(jacrev) contracted over P       {1e3 * s['jacobian_s']:8.0f} ms  "
          f"(×{s['loop_s'] / s['jacobian_s']:.1f} over the loop)")
    print(f"  factorised Σ_l (AAᵀ+1) ⊙ ΔΔᵀ          {1e3 * s['factorised_s']:8.0f} ms  "
          f"(×{s['loop_s'] / s['factorised_s']:.1f} over the loop; target ≥ 20)", flush=True)
    print(f"  largest gap factorised vs loop, relative to the largest entry: {s['relative_gap']:.1e}")
    jacobian_bytes = args.memory_n * 10 * params * 4
    print(f"  n = {args.memory_n}: the Jacobian path would first hold J (n, C, P) = ({args.memory_n}, 10, {params}): "
          f"{jacobian_bytes / 2**30:.2f} GiB in float32, before its product", flush=True)
    for method in args.methods.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", method, str(args.memory_n), "--device",
                              args.device, "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode:
            print(f"  n = {args.memory_n}, {method}: failed ({out.stderr.strip().splitlines()[-1]})")
            continue
        m = json.loads(out.stdout)
        print(f"  n = {m['n']}, {method:10s} ({args.device}): peak memory {m['peak_bytes'] / 2**30:.2f} GiB above "
              f"the {m['baseline_bytes'] / 2**30:.2f} GiB before the call (the output alone "
              f"{m['output_bytes'] / 2**30:.2f} GiB), {m['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
