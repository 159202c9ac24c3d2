import pytest
import torch

from actlab import harvest as harvest_lib
from actlab.models import LanguageModel

from tiny_models import tiny_model


def _tiny_lm(arch="llama"):
    return LanguageModel(name=f"tiny-{arch}", model=tiny_model(arch), tokenizer=None, source="random config")


def _windows(n=10, seq=12):
    return torch.randint(0, 97, (n, seq), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_harvest_matches_a_plain_forward(tmp_path, arch):
    lm = _tiny_lm(arch)
    windows = _windows()
    result = harvest_lib.harvest(lm, windows, "resid_post.1", tmp_path / "h", batch_size=4, windows_per_shard=3,
                                 progress=False)
    acts = result.load()
    assert acts.shape == (10 * 11, lm.d_model) and result.n_tokens == 110
    out = lm.model(input_ids=windows, output_hidden_states=True)
    torch.testing.assert_close(acts, out.hidden_states[2][:, 1:].reshape(-1, lm.d_model), rtol=1e-5, atol=1e-5)
    assert torch.equal(result.tokens(), windows[:, 1:].reshape(-1))


def test_interrupted_harvest_resumes_to_the_same_activations(tmp_path, monkeypatch):
    lm = _tiny_lm()
    windows = _windows(n=12)
    reference = harvest_lib.harvest(lm, windows, "resid_post.2", tmp_path / "whole", batch_size=2,
                                    windows_per_shard=3, progress=False).load()
    real_save = harvest_lib._atomic_save
    saves = []

    def save_then_crash(tensors, dest):
        if len(saves) == 3:  # the token file and two shards are written, then the run dies
            raise KeyboardInterrupt
        saves.append(dest.name)
        real_save(tensors, dest)

    monkeypatch.setattr(harvest_lib, "_atomic_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        harvest_lib.harvest(lm, windows, "resid_post.2", tmp_path / "resumed", batch_size=2, windows_per_shard=3,
                            progress=False)
    monkeypatch.setattr(harvest_lib, "_atomic_save", real_save)
    done = sorted(p.name for p in (tmp_path / "resumed").glob("shard_*.safetensors"))
    assert done == ["shard_00000.safetensors", "shard_00001.safetensors"]
    assert not list((tmp_path / "resumed").glob(".tmp-*")), "a partial shard was left behind"
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *a: calls.append(1))
    resumed = harvest_lib.harvest(lm, windows, "resid_post.2", tmp_path / "resumed", batch_size=2,
                                  windows_per_shard=3, progress=False)
    handle.remove()
    assert len(calls) == 4, "only the two missing shards (2 batches of <= 2 windows each) should be recomputed"
    assert torch.equal(resumed.load(), reference)


def test_a_directory_holding_another_harvest_is_refused(tmp_path):
    lm = _tiny_lm()
    harvest_lib.harvest(lm, _windows(), "resid_post.0", tmp_path / "h", progress=False)
    with pytest.raises(Exception, match="different harvest"):
        harvest_lib.harvest(lm, _windows(), "resid_post.1", tmp_path / "h", progress=False)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_bf16_harvest_runs_a_bf16_copy_close_to_fp32(tmp_path, arch):
    lm = _tiny_lm(arch)
    windows = _windows()
    exact = harvest_lib.harvest(lm, windows, "resid_post.1", tmp_path / "fp32", progress=False)
    fast = harvest_lib.harvest(lm, windows, "resid_post.1", tmp_path / "bf16", progress=False,
                               compute_dtype=torch.bfloat16)
    assert exact.meta["fingerprint"] != fast.meta["fingerprint"]  # never read back as the other
    assert fast.meta["compute_dtype"] == "torch.bfloat16" and fast.load().dtype == torch.float32
    a, b = exact.load(), fast.load()
    assert ((b - a).norm(dim=-1) / a.norm(dim=-1)).median() < 0.05
    assert lm.dtype == torch.float32  # the model itself is untouched
    assert lm.in_precision(torch.bfloat16) is lm.in_precision(torch.bfloat16) and lm.in_precision(lm.dtype) is lm
    assert harvest_lib.resolve_compute_dtype(torch.float32, lm) is None
    with pytest.raises(Exception, match="compute_dtype"):
        harvest_lib.resolve_compute_dtype("fp8", lm)
