"""The paper-scale hypernetwork's output layer computed two ways, by the number of rows.

At task t a training step runs the Permuted MNIST hypernetwork's last layer
(100 -> 2.06M outputs) on t + 1 task embeddings at once. hypnettorch computes it
as h·Wᵀ (F.linear); W·hᵀ, transposed, is the same sum of products in another
GEMM call. For each number of rows this prints the time of both (best of
--repeats), for the forward product alone and for forward and backward together
(the gradients of W, b and h for a given output gradient, as in a training
step), and whether their outputs are equal bit for bit, on this machine's GEMM
library. Runs keep hypnettorch's h·Wᵀ: in a whole training step on a CPU,
W·hᵀ did not pay (docs/performance.md#the-output-layer-transposed-on-a-cpu).

    python bench/output_layer.py [--rows=1,2,3,4,5,10,100] [--device=cuda]
                                 [--outputs=2036010] [--hidden=100] [--repeats=3]
"""

import argparse
import time
from functools import partial

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


def linear(h, weight, bias):
    """hypnettorch's form: h·Wᵀ + b, [rows, outputs]."""
    return F.linear(h, weight, bias)


def transposed(h, weight, bias):
    """The same layer as (W·hᵀ + b)ᵀ: a [rows, outputs] view of an [outputs, rows] product."""
    return torch.addmm(bias[:, None], weight, h.T).T


def forward_and_backward(layer, h, weight, bias, gradient):
    """The layer's forward pass and its backward pass for the output gradient `gradient`."""
    torch.autograd.backward(layer(h, weight, bias), gradient)
    h.grad = weight.grad = bias.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,5,10,100")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--outputs", type=int, default=OUTPUTS)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(args.outputs, args.hidden, generator=generator) * 0.01).to(args.device)
    bias = (torch.randn(args.outputs, generator=generator) * 0.01).to(args.device)
    weight.requires_grad_()
    bias.requires_grad_()
    print(f"output layer [{args.outputs:,} x {args.hidden}] on {args.device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'rows':>5}{'h·Wᵀ ms':>10}{'W·hᵀ ms':>10}  {'bitwise equal':<15}"
          f"{'fwd+bwd h·Wᵀ':>13}{'W·hᵀ':>8}")
    for rows in (int(r) for r in args.rows.split(",")):
        h = torch.randn(rows, args.hidden, generator=generator).to(args.device).requires_grad_()
        gradient = torch.randn(rows, args.outputs, generator=generator).to(args.device)
        with torch.no_grad():
            equal = torch.equal(linear(h, weight, bias), transposed(h, weight, bias))
            times = [best_ms(partial(layer, h, weight, bias), args.device, args.repeats)
                     for layer in (linear, transposed)]
        times += [best_ms(partial(forward_and_backward, layer, h, weight, bias, gradient),
                          args.device, args.repeats) for layer in (linear, transposed)]
        print(f"{rows:>5}{times[0]:>10.1f}{times[1]:>10.1f}  {'yes' if equal else 'no':<15}"
              f"{times[2]:>13.1f}{times[3]:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
