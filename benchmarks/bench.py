"""Performance of the library on the offline default model (``make bench``).

Measures, on SmolLM2-135M with 16 sequences of 128 tokens: a plain fp32 forward
pass; a forward pass capturing ``resid_post`` at every layer (the overhead
ratio); harvest throughput at ``resid_post.15`` in fp32 and as the SAE pipeline
runs it (bf16 where the CPU has AMX) against the plain forward; the relative error
of bf16 activations; TopK SAE training throughput on cached activations of English
prose (4,096 latents, k = 32, batch 1,024, the trainer's default options) and the
explained variance of fp32 and bf16 SAEs on WikiText-2 test; end-to-end throughput;
and cold (GGUF) and cached model loads. SAELens figures are printed beside ours.

Timings on a small shared machine swing, so each figure is the median of
interleaved repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import torch

import actlab
from actlab import harvest, hooks, sae

warnings.filterwarnings("ignore")

# Anchors measured outside the project on a machine of this kind (2 cores, AMX), side by side with
# ours on the same cached activations: SAELens 6.54, TopK, 4,096 latents, k = 32, batch 1,024.
SAELENS_TRAIN = (3_157, 3_462)
SAELENS_END_TO_END = 876


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Run each function once per round, ``repeats`` rounds, after one warm-up round; medians in seconds."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--sae-tokens", type=int, default=131_072, help="training tokens of the bench's SAEs")
    parser.add_argument("--skip-cold-load", action="store_true")
    parser.add_argument("--smoke-only", action="store_true", help="only print the recorded smoke-run times")
    args = parser.parse_args()
    if args.smoke_only:
        print_smoke_times()
        return
    threads = actlab.seed_everything(0)
    print(f"actlab {actlab.__version__}, torch {torch.__version__}, {threads} threads\n")

    # --- model loads -------------------------------------------------------------------------------
    if not args.skip_cold_load:
        with tempfile.TemporaryDirectory() as cold_cache:
            previous = os.environ.get("ACTLAB_CACHE_DIR")
            os.environ["ACTLAB_CACHE_DIR"] = cold_cache
            cold = timed(lambda: actlab.load_model("smollm2-135m"))
            if previous is None:
                os.environ.pop("ACTLAB_CACHE_DIR")
            else:
                os.environ["ACTLAB_CACHE_DIR"] = previous
        print(f"cold load (GGUF -> safetensors)      {cold:8.2f} s")
    lm = actlab.load_model("smollm2-135m")
    cached = statistics.median(timed(lambda: actlab.load_model("smollm2-135m")) for _ in range(5))
    print(f"cached load (median of 5)            {cached:8.2f} s")

    # --- forward, capture-all, harvest ---------------------------------------------------------------
    ids = torch.randint(0, lm.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    all_resid = [f"resid_post.{i}" for i in range(lm.n_layers)]
    site = f"resid_post.{args.layer}"
    model = lm.model
    fast = lm.in_precision(torch.bfloat16) if sae.fast_bf16() else lm
    print(f"bf16 products native (AMX): {sae.fast_bf16()}; the SAE pipeline harvests in "
          f"{fast.dtype} and trains with {sae.resolve_matmul_dtype('auto')} products")

    def plain() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def capture_all() -> None:
        with torch.inference_mode(), hooks.capture(lm, all_resid) as acts:
            model(input_ids=ids, use_cache=False)
        assert len(acts) == lm.n_layers

    def harvest_fp32() -> None:
        with torch.inference_mode():
            hooks.run_with_cache(lm, site, input_ids=ids)

    def harvest_default() -> None:
        with torch.inference_mode():
            hooks.run_with_cache(fast, site, input_ids=ids)

    times = median_interleaved({"plain": plain, "capture": capture_all, "harvest32": harvest_fp32,
                                "harvest": harvest_default}, args.repeats)
    tokens = ids.numel()
    plain_tps = tokens / times["plain"]
    print(f"\n{args.batch} x {args.seq} tokens, median of {args.repeats} interleaved runs")
    print(f"plain forward (fp32)                 {times['plain'] * 1e3:8.1f} ms  {plain_tps:9,.0f} tok/s")
    print(f"capture resid_post at all {lm.n_layers} layers    {times['capture'] * 1e3:8.1f} ms  "
          f"{times['capture'] / times['plain']:.2f}x plain (peers: about 1.00x)")
    for name, label in (("harvest32", "fp32"), ("harvest", "default")):
        tps = tokens / times[name]
        goal = "  (goal >= 4x)" if name == "harvest" else ""
        print(f"harvest {site} {label:<13} {times[name] * 1e3:8.1f} ms  {tps:9,.0f} tok/s  "
              f"{tps / plain_tps:.2f}x plain fp32{goal}")

    # --- SAE training on cached activations of English prose, and the bf16 deltas ----------------------
    from actlab import data

    n_windows = -(-args.sae_tokens // (args.seq - 1))
    windows = harvest.token_windows(lm, data.english_prose("train"), args.seq, n_windows)
    heldout = harvest.token_windows(lm, data.english_prose("heldout"), args.seq, 32)
    cfg = sae.SAEConfig(d_in=lm.d_model, d_sae=4096, kind="topk", k=32, batch_size=1024)
    with tempfile.TemporaryDirectory() as shards:
        stored = {}
        for label, compute in (("fp32", None), ("default", "auto")):
            started = time.perf_counter()
            stored[label] = harvest.harvest(lm, windows, site, f"{shards}/{label}", progress=False,
                                            compute_dtype=compute).load()
            stored[label + "_s"] = time.perf_counter() - started
        held = harvest.harvest(lm, heldout, site, f"{shards}/heldout", progress=False).load()
    relative = (stored["default"] - stored["fp32"]).norm(dim=-1) / stored["fp32"].norm(dim=-1)
    print(f"\nbf16 harvest against fp32 on {len(relative):,} tokens: relative error median "
          f"{relative.median():.2%}, 99th percentile {relative.quantile(0.99):.2%}")
    results = {}
    for label, acts, matmul in (("fp32 harvest, fp32 trainer", stored["fp32"], "float32"),
                                ("default harvest, fp32 trainer", stored["default"], "float32"),
                                ("default harvest, default trainer", stored["default"], "auto")):
        run_cfg = sae.SAEConfig(**{**cfg.__dict__, "matmul_dtype": matmul})
        sae.train_sae(acts[: cfg.batch_size * 3], run_cfg, progress=False)  # warm-up
        trained, log = sae.train_sae(acts, run_cfg, progress=False)
        results[label] = (1 - sae.evaluate(trained, held)["fvu"], log)
    reference = results["fp32 harvest, fp32 trainer"][0]
    print(f"TopK SAE ({lm.d_model} -> {cfg.d_sae}, k={cfg.k}, batch {cfg.batch_size}) on {len(stored['fp32']):,} "
          f"tokens, explained variance on {len(held):,} WikiText-2 test tokens:")
    for label, (ev, log) in results.items():
        print(f"  {label:34s} EV {ev:.4f} ({ev - reference:+.4f} vs fp32; bar |delta| <= 0.01)  "
              f"{log.tokens_per_second:8,.0f} tok/s")
    train_tps = results["default harvest, default trainer"][1].tokens_per_second
    harvest_tps = len(stored["default"]) / stored["default_s"]
    end_to_end = 1 / (1 / harvest_tps + 1 / train_tps)
    print(f"\nSAE training, default options       {train_tps:9,.0f} tok/s  {train_tps / SAELENS_TRAIN[1]:.1f}-"
          f"{train_tps / SAELENS_TRAIN[0]:.1f}x SAELens 6.54 ({SAELENS_TRAIN[0]:,}-{SAELENS_TRAIN[1]:,}; goal >= 10,000)")
    print(f"harvest + training, end to end      {end_to_end:9,.0f} tok/s  {end_to_end / SAELENS_END_TO_END:.1f}x "
          f"SAELens 6.54 ({SAELENS_END_TO_END}; goal >= 1,750)")
    print_smoke_times()


def print_smoke_times() -> None:
    """The notebooks' smoke-run times and CI projection, as the last test session measured them."""
    from actlab import runner

    report = runner.load_smoke_times()
    if not report.get("runs"):
        print("\nsmoke runs: none measured yet (`make test` records them in runs/smoke-times.json)")
        return
    best = runner.smoke_seconds_by_notebook(report)
    print(f"\nsmoke runs on smollm2-135m (test session of {report['date'][:10]}, commit {report['commit']})")
    for slug, seconds in sorted(best.items(), key=lambda kv: -kv[1]):
        print(f"  {slug:28s} {seconds:6.1f} s" + ("  over 60 s" if seconds > 60 else ""))
    if "projection" in report:
        proj = report["projection"]
        print(f"median {proj['median_s']:.1f} s; projected CI at {proj['notebooks']} notebooks: "
              f"{proj['projected_min']:.1f} min")


if __name__ == "__main__":
    main()
