"""The lab PC needs no torch: importing streaming and serving must not load it."""

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys, threading
import streaming, streaming.cli, streaming.worker, streaming.producer, streaming.subscriber
import streaming.security, streaming.control, streaming.watch, streaming.recorder, streaming.protocol
from streaming.worker import TransferWorker, WorkerConfig
from streaming.producer import SpectrumPusher
from streaming.subscriber import ResultSubscriber
import numpy as np

worker = TransferWorker(WorkerConfig(model=sys.argv[1], input="tcp://127.0.0.1:*", output="tcp://127.0.0.1:*",
                                     control="tcp://127.0.0.1:*"))
thread = threading.Thread(target=worker.run)
thread.start()
sub = ResultSubscriber(worker.endpoints["output"])
sub.wait_ready(worker.endpoints["control"])
pusher = SpectrumPusher(worker.endpoints["input"])
pusher.send(np.ones(48, np.float32))
message = sub.recv(timeout_s=10)
pusher.close()
worker.stop()
thread.join()
print(json.dumps({"served": message is not None and message.topic == "transfer",
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""


def test_streaming_runs_without_loading_torch(test_model):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(test_model)], capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["served"]
    assert result["torch"] == []
