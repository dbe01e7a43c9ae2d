"""The paper-scale hypernetwork's output layer computed three ways, by the number of rows.

At task t a training step runs the Permuted MNIST hypernetwork's last layer
(100 -> 2.04M outputs) on t + 1 task embeddings at once. hypnettorch computes it
as h·Wᵀ (F.linear); W·hᵀ, transposed, is the same sum of products in another
GEMM call; on a CPU, runs share W's rows among the cores (output_layer.py,
docs/performance.md#the-output-layer-across-the-cores). For each number of rows
this prints the time of each form (median of --repeats), for the forward product
alone and for forward and backward together (the gradients of W, b and h for a
given output gradient, as in a training step; freed memory kept for reuse as in a
run), and whether each form's output
equals h·Wᵀ's bit for bit, on this machine's GEMM library.

    python bench/output_layer.py [--rows=1,2,3,4,5,10,100] [--device=cuda]
                                 [--outputs=2036010] [--hidden=100] [--repeats=3]
                                 [--block_rows=4096]
"""

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import output_layer  # noqa: E402
import machine  # noqa: E402
import timing  # noqa: E402  (bench/timing.py)

OUTPUTS, HIDDEN = 2_036_010, 100  # Permuted MNIST's best configuration


def median_ms(work, device: str, repeats: int = 3) -> float:
    """The median of `repeats` runs of work(), in milliseconds (after one warm-up)."""
    work()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        work()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


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
    parser.add_argument("--rows", type=timing.whole_numbers(1), default="1,2,3,4,5,10,100")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--outputs", type=timing.at_least(1), default=OUTPUTS)
    parser.add_argument("--hidden", type=timing.at_least(1), default=HIDDEN)
    parser.add_argument("--repeats", type=timing.at_least(1), default=3)
    parser.add_argument("--block_rows", type=timing.at_least(1),
                        default=output_layer.BLOCK_ROWS)
    args = parser.parse_args()
    args.device = timing.usable_device(args.device)
    output_layer.BLOCK_ROWS = args.block_rows
    machine.keep_freed_memory()  # as a run does: freed gradients come back without page faults
    forms = {"h·Wᵀ": linear, "W·hᵀ": transposed}
    if args.device == "cpu":
        forms["shared"] = output_layer.SharedLinear.apply
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(args.outputs, args.hidden, generator=generator) * 0.01).to(args.device)
    bias = (torch.randn(args.outputs, generator=generator) * 0.01).to(args.device)
    weight.requires_grad_()
    bias.requires_grad_()
    print(f"output layer [{args.outputs:,} x {args.hidden}] on {args.device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}"
          + (f", shared in blocks of {args.block_rows} rows" if "shared" in forms else ""))
    print(f"{'rows':>5}" + "".join(f"{name + ' ms':>11}" for name in forms)
          + "".join(f"{'fwd+bwd ' + name:>15}" for name in forms)
          + "".join(f"{name + ' bitwise':>15}" for name in list(forms)[1:]))
    for rows in args.rows:
        h = torch.randn(rows, args.hidden, generator=generator).to(args.device).requires_grad_()
        gradient = torch.randn(rows, args.outputs, generator=generator).to(args.device)
        with torch.no_grad():
            reference = linear(h, weight, bias)
            equal = [torch.equal(reference, form(h, weight, bias))
                     for form in list(forms.values())[1:]]
            times = [median_ms(partial(form, h, weight, bias), args.device, args.repeats)
                     for form in forms.values()]
        times += [median_ms(partial(forward_and_backward, form, h, weight, bias, gradient),
                            args.device, args.repeats) for form in forms.values()]
        print(f"{rows:>5}" + "".join(f"{t:>11.1f}" for t in times[:len(forms)])
              + "".join(f"{t:>15.1f}" for t in times[len(forms):])
              + "".join(f"{'yes' if e else 'no':>15}" for e in equal), flush=True)


if __name__ == "__main__":
    main()
