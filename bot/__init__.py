"""Deskhand: a Slack-first support agent with an email sidecar."""

import os

# The encoder and classifier do many small matrix products inside one busy async process.
# A multi-threaded BLAS spins its threads against the event loop and the store thread on a
# 2-core machine and was measured 5x slower there; one BLAS thread is faster and steadier.
# Set before numpy is first imported; an operator's explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# onnxruntime (the onnx encoder, kb_loader/onnx_encoder.py) writes a device id and a telemetry
# database under ~/.cache/Microsoft when it is imported, unless this is set first. Deskhand
# writes nothing outside DESKHAND_HOME.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
