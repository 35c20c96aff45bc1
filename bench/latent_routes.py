"""Other routes from a secondary spectrum to the VAE's latent space, against VAE + MLP and DS.

On the robustness suite's quick maps the decoder reaches the test day's primary spectra far
closer than any model transfers them (the decoder floor, docs/transfer.md), so the limit of
VAE + MLP is the map from the secondary spectrum to a latent point. This measures routes
that might find better latent points, each on the same fitted VAE + MLP and DS (test RSE in
baseline-corrected counts; the test map is of another day):

- ``vae_mlp``, ``ds``: the two models as fitted (DS's ridge chosen as `train` chooses it);
- ``encode_ds``: decoder(encoder mean(DS's prediction)), DS's spectrum put through the VAE;
- ``project_ds``: the decoder's closest point to DS's prediction (the latent search of the
  decoder floor, `VAEMLPTransfer.best_reconstruction`, aimed at DS's output);
- ``ridge_latent``: a ridge regression from the secondary to the encoder's latent means
  (strength 100 of the candidates 1, 10, 100: the best here), through the decoder;
- ``finetune``: VAE + MLP with 20 epochs of end-to-end fine-tuning (learning rate 1e-4);
- ``seed_ensemble``: the mean output of VAE + MLP fitted with seeds 0..N-1 (``--seeds``);
- ``mean_of_vae_mlp_and_ds``: the mean of the two models' outputs;
- ``blend``: w VAE + MLP + (1 - w) DS with w out of 0, 0.25, 0.5, 0.75, 1 chosen by the
  validation RSE as measured (``blend_weight``; ``blend_validation``: the validation RSE of
  every w, as measured and under the simulated day change).

``--no-refits`` leaves out the fine-tuned model and the seed ensemble (one VAE + MLP fit per
scenario: every scenario in minutes).

Prints one JSON object; a few minutes per scenario on two cores with the quick networks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import Ridge

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ds_rank import quick_scenario  # noqa: E402
from bench.transfer_suite import SCENARIOS, prepare_maps  # noqa: E402
from transfer.metrics import rse  # noqa: E402
from transfer.selection import BLEND_WEIGHTS, selection_inputs  # noqa: E402

EPILOG = """example (the suite's quick maps, written there first if missing):
  nice python bench/latent_routes.py --work /tmp/suite-maps --scenario basalt --scenario pegmatite-n300
"""


def _latent(vae, scaled: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return vae.encode(torch.from_numpy(np.ascontiguousarray(scaled, np.float32)))[0].numpy()


def _decode(vae, latent: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return vae.decoder(torch.from_numpy(np.ascontiguousarray(latent, np.float32))).numpy()


def routes(name: str, work: Path, *, seeds: int, refits: bool = True, seed: int = 0) -> dict:
    q = quick_scenario(name, work, seed)
    config, arrays, unscale, zero = q.config, q.maps["arrays"], q.unscale, q.zero
    train, val, prototypes, ds = q.train, q.val, q.prototypes, q.ds
    test = arrays["test"]["secondary"]
    truth = unscale(arrays["test"]["primary"]).astype(np.float64)

    def score(scaled_primary: np.ndarray) -> float:
        return round(rse(truth, unscale(np.asarray(scaled_primary, np.float32)).astype(np.float64)), 4)

    fitted = []
    for s in range(seed, seed + (seeds if refits else 1)):
        model = clone(prototypes["vae_mlp"]).set_params(seed=s)
        fitted.append(model.fit(*train, validation=val, secondary_zero=zero))
    model, vae = fitted[0], fitted[0].vae_
    by_ds = ds.predict(test)
    ridge = Ridge(alpha=100.0).fit(train[0], _latent(vae, train[1]))
    out = {"vae_mlp": score(model.predict(test)), "ds": score(by_ds),
           "encode_ds": score(_decode(vae, _latent(vae, by_ds))),
           "project_ds": score(model.best_reconstruction(by_ds.astype(np.float32))),
           "ridge_latent": score(_decode(vae, ridge.predict(test))),
           "mean_of_vae_mlp_and_ds": score((model.predict(test) + by_ds) / 2)}
    if refits:
        tuned = clone(prototypes["vae_mlp"]).set_params(seed=seed, finetune_epochs=20, finetune_learning_rate=1e-4)
        tuned.fit(*train, validation=val, secondary_zero=zero)
        out.update(finetune=score(tuned.predict(test)),
                   seed_ensemble=score(np.mean([m.predict(test) for m in fitted], axis=0)),
                   seed_singles=[score(m.predict(test)) for m in fitted])
    val_truth = unscale(val[1]).astype(np.float64)
    blend_validation = {}
    for label, inputs in (("as_measured", val[0]), ("day_change", selection_inputs(config["baselines"], val[0], zero))):
        if inputs is None:
            continue
        a, b = model.predict(inputs), ds.predict(inputs)
        blend_validation[label] = {f"{w:g}": round(rse(val_truth, unscale(w * a + (1 - w) * b).astype(np.float64)), 4)
                                   for w in BLEND_WEIGHTS}
    weight = min(BLEND_WEIGHTS, key=lambda w: blend_validation["as_measured"][f"{w:g}"])
    out["blend"] = score(weight * model.predict(test) + (1 - weight) * by_ds)
    return {"n_train": int(len(train[0])), "test_rse": out, "blend_weight": weight,
            "blend_validation": blend_validation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder of the suite's quick maps")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--seeds", type=int, default=4, help="VAE + MLP fits of the seed ensemble (default: 4)")
    parser.add_argument("--no-refits", action="store_true",
                        help="leave out the fine-tuned model and the seed ensemble (one VAE + MLP fit per scenario)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    _, stale = prepare_maps(args.scenario, args.work, quick=True)
    if stale:
        print(f"latent_routes: {stale}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {name: routes(name, args.work, seeds=max(1, args.seeds), refits=not args.no_refits)
               for name in args.scenario}
    json.dump({"bench": "latent_routes", "seconds": round(time.perf_counter() - started, 1), "results": results},
              sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
