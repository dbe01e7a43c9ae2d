"""The paper-scale hypernetwork's output layer computed two ways, by the number of rows.

At task t a training step runs the Permuted MNIST hypernetwork's last layer
(100 -> 2.06M outputs) on t + 1 task embeddings at once. hypnettorch computes it
as h·Wᵀ (F.linear); W·hᵀ, transposed, is the same sum of products in another
GEMM call. For each number of rows this prints the time of both (best of 3) and
whether their outputs are equal bit for bit, on this machine's GEMM library:

    python bench/output_layer.py [--rows=1,2,3,4,5,10,100] [--device=cuda]
"""

import argparse
import time

import torch
import torch.nn.functional as F

OUTPUTS, HIDDEN = 2_036_010, 100  # Permuted MNIST's best configuration


def best_ms(work, device: str, repeats: int = 3) -> float:
    """The fastest of `repeats` runs of work(), in milliseconds (after one warm-up)."""
    work()
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        work()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,5,10,100")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(OUTPUTS, HIDDEN, generator=generator) * 0.01).to(args.device)
    bias = (torch.randn(OUTPUTS, generator=generator) * 0.01).to(args.device)
    print(f"output layer [{OUTPUTS:,} x {HIDDEN}] on {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'rows':>5}{'h·Wᵀ ms':>10}{'W·hᵀ ms':>10}  bitwise equal")
    for rows in (int(r) for r in args.rows.split(",")):
        h = torch.randn(rows, HIDDEN, generator=generator).to(args.device)
        linear = lambda: F.linear(h, weight, bias)  # noqa: E731
        transposed = lambda: torch.addmm(bias[:, None], weight, h.T).T  # noqa: E731
        equal = torch.equal(linear(), transposed())
        print(f"{rows:>5}{best_ms(linear, args.device):>10.1f}"
              f"{best_ms(transposed, args.device):>10.1f}  {'yes' if equal else 'no'}", flush=True)


if __name__ == "__main__":
    main()
