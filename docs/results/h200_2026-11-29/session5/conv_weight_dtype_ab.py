"""Is the conv kernel slower with a float32 weight (autocast: parameters stay float32) than with a bf16 one?
Forward and flipped (input-gradient) launches, per shape: weight bf16, weight fp32, weight fp32 cast first."""
import json, os, sys
import torch
sys.path.insert(0, 'tools')
import benchmark_dwconv as b
ops = b.load_ops(); k = ops.triton_dwconv
k.precompile_size_classes = False
rows = []
for shape in b.parse_shapes(['detection']) + b.SHAPES:
    x, w, gy = b.make_inputs(shape, torch.bfloat16)
    w32 = w.float()
    r = dict(shape=shape)
    r['fwd_w_bf16'] = b.bench(lambda: k.launch_conv(x, w))
    r['fwd_w_fp32'] = b.bench(lambda: k.launch_conv(x, w32))
    r['fwd_w_fp32_cast_first'] = b.bench(lambda: k.launch_conv(x, w32.to(torch.bfloat16)))
    r['dgrad_w_bf16'] = b.bench(lambda: k.launch_conv(gy, w, flip=True))
    r['dgrad_w_fp32'] = b.bench(lambda: k.launch_conv(gy, w32, flip=True))
    xg, wp = x.detach().requires_grad_(), w32.detach().requires_grad_()
    def autocast_fwd_bwd():
        with torch.autocast('cuda', torch.bfloat16):
            y = ops.depthwise_conv2d(xg, wp, impl='triton')
        return torch.autograd.grad(y, (xg, wp), gy)
    r['autocast_fwdbwd_w_fp32'] = b.bench(autocast_fwd_bwd)
    print(json.dumps({k_: (round(v, 3) if isinstance(v, float) else v) for k_, v in r.items()}), flush=True)
    rows.append(r)
json.dump(rows, open(os.path.join(os.environ['OUT'], 'conv_ab.json'), 'w'), indent=1)
