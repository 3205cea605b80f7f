#!/usr/bin/env python3
"""torch_weights.py OUTDIR: a PyTorch pre-norm transformer layer's state_dict as a plain
safetensors file written by hand (json + numpy: Debian has no safetensors package), with an
input and the layer's outputs as .npy files, for test_nn_weights. Exit status 77: no torch."""
import json
import os
import sys

try:
    import numpy as np
    import torch
except ImportError:
    sys.exit(77)


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0,
                                             activation="gelu", batch_first=True, norm_first=True)
    with torch.no_grad():  # biases and norms away from their initial 0 and 1
        for name, p in layer.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    layer.eval()
    x = torch.randn(2, 5, 8)
    causal = torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)
    with torch.no_grad():
        y = layer(x)
        yc = layer(x, src_mask=causal)
    save_safetensors(os.path.join(out, "block.safetensors"), layer.state_dict())
    for name, a in (("x", x), ("y", y), ("yc", yc)):
        np.save(os.path.join(out, name + ".npy"), a.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
