"""Hyper-parameter search: a tiny Optuna study over a shrunken space."""

from tests.transfer.conftest import tiny_config
from transfer.config import TransferConfig
from transfer.search import run_search


def test_search_returns_a_trainable_config_from_the_space(sim_maps):
    space = {"vae_first": [32, 16], "vae_second": [16, 8], "latent": [4, 8], "mlp_first": [16, 8],
             "mlp_second": [16, 8], "learning_rate": [3e-3, 1e-3], "trials": 2, "max_epochs": 2}
    config = tiny_config(search=space)
    result = run_search(sim_maps["train"], sim_maps["val"], config=config, device="cpu", seed=0, progress=False)
    best = TransferConfig(result["config"])          # validates like a user's file
    assert best["vae"]["hidden"][0] in space["vae_first"] and best["vae"]["latent"] in space["latent"]
    assert best["mlp"]["hidden"][1] in space["mlp_second"]
    assert best["vae"]["learning_rate"] in space["learning_rate"]
    for stage in ("vae", "mlp"):
        assert result[stage]["completed"] >= 1 and result[stage]["best_value"] > 0
    assert best["mlp"]["epochs"] == config["mlp"]["epochs"]      # untouched keys stay
