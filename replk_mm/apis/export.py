"""ONNX export of the deploy form, checked with onnxruntime against PyTorch.

What is exported (the input is always the image tensor after the data preprocessor's normalisation, NCHW):

* a segmentor: its logits, ``model._forward(inputs)`` (as mmdeploy exports it), at 1/4 of the input size
  for UperNet; resizing to the image and the argmax stay with the caller;
* a detector: the backbone + neck feature maps, ``model.extract_feat(inputs)``: the RoI heads after them
  need RoIAlign and NMS with data-dependent shapes, which plain ONNX cannot express (mmdeploy adds them as
  custom ops for TensorRT / onnxruntime);
* ``part='backbone'``, for any config with a RepLKNet backbone: the backbone's feature maps; its weights may
  come from any released layout, in either form (see :func:`replk_mm.apis.builder.load_backbone_checkpoint`).

The large kernels are merged (``switch_to_deploy``) and every depthwise conv runs PyTorch's own conv, so the
graph holds standard ``Conv`` nodes only, never the Triton op. ``nn.AdaptiveAvgPool2d`` (UperNet's pyramid
pooling) becomes averaging matrices built from the input's shape: ONNX has no adaptive pooling, and the
exporters' translations are refused (TorchScript) or silently fixed to the export size (torch.export) when
an output size does not divide the input's.
"""
import json
import logging
import os.path as osp

import torch
import torch.nn as nn

from replk_mm.apis.builder import build_backbone, load_backbone_checkpoint
from replk_mm.apis.inference import check_writable_dir, load_checked_model
from replk_mm.checkpoint import write_atomic
from replk_mm.checkpoint.io import same_file
from replk_mm.checkpoint.reparam import switch_to_deploy
from replk_mm.numerics import relative_error
from replk_mm.ops import DepthwiseConv2d

TOLERANCE = 1e-4
PARTS = ('model', 'backbone')
OPSET = 18
INPUT_NAME = 'inputs'


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two matrix products whose matrices follow the input's height and width.

    Output bin ``i`` of ``n`` averages input rows ``floor(i*H/n)`` to ``ceil((i+1)*H/n) - 1``, PyTorch's
    own bins; built from tensor arithmetic on the shape, the exported graph stays right for any input size.
    """

    def __init__(self, output_size):
        super().__init__()
        size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if any(s is None for s in size):
            raise ValueError(f'AdaptiveAvgPool2d({output_size}): output sizes of None are not supported')
        self.output_size = size

    @staticmethod
    def bins(size, out, like):
        """The (out, size) averaging matrix of one axis."""
        positions = torch.arange(size, device=like.device)
        index = torch.arange(out, device=like.device).unsqueeze(1)
        start = torch.div(index * size, out, rounding_mode='floor')
        end = torch.div((index + 1) * size + out - 1, out, rounding_mode='floor')
        member = ((positions >= start) & (positions < end)).to(like.dtype)
        return member / member.sum(1, keepdim=True)

    def forward(self, x):
        height, width = x.shape[-2:]
        return self.bins(height, self.output_size[0], x) @ x @ self.bins(width, self.output_size[1], x).t()


def replace_adaptive_pools(module):
    """Swap every ``nn.AdaptiveAvgPool2d`` below ``module`` for :class:`ExportableAdaptiveAvgPool2d`; how many."""
    replaced = 0
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, ExportableAdaptiveAvgPool2d(child.output_size))
            replaced += 1
        else:
            replaced += replace_adaptive_pools(child)
    return replaced


def force_torch_dwconv(module):
    """Every depthwise conv of ``replk_mm.ops`` below ``module`` runs PyTorch's conv (never the Triton op)."""
    convs = [m for m in module.modules() if isinstance(m, DepthwiseConv2d)]
    for conv in convs:
        conv.impl = 'torch'
    return len(convs)


class Exported(nn.Module):
    """What goes into the ONNX file: normalised images -> a segmentor's logits, a detector's backbone+neck
    features (``extract_feat``) or a backbone's feature maps."""

    KINDS = {'logits': 'segmentor logits (model._forward)', 'features': 'backbone + neck feature maps',
             'backbone': 'backbone feature maps'}

    def __init__(self, model, kind):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f'kind must be one of {sorted(self.KINDS)}, got {kind!r}')
        self.model = model
        self.kind = kind

    @property
    def backbone(self):
        return self.model if self.kind == 'backbone' else self.model.backbone

    def forward(self, inputs):
        if self.kind == 'logits':
            return self.model._forward(inputs)
        if self.kind == 'features':
            return tuple(self.model.extract_feat(inputs))
        return tuple(self.model(inputs))

    def output_names(self, inputs):
        if self.kind == 'logits':
            return ['logits']
        with torch.no_grad():
            count = len(self(inputs))
        prefix = 'stage' if self.kind == 'backbone' else 'feat'
        indices = self.model.out_indices if self.kind == 'backbone' else range(count)
        return [f'{prefix}{i}' for i in indices]


def require_replknet_backbone(type_name, config):
    if type_name not in ('RepLKNet', 'replk_mm.RepLKNet'):
        raise TypeError(f'{config}: model.backbone is {type_name}; only a RepLKNet backbone has a deploy form '
                        '(large kernels merged) to export')


def exportable_model(cfg, config, checkpoint, part='model'):
    """:class:`Exported` in eval mode on the CPU, weights loaded and checked, large kernels not merged yet.

    ``part='model'``: a segmentor's logits or a detector's backbone+neck features; the checkpoint must fit
    the config's whole model (form, keys, shapes). ``part='backbone'``: the backbone alone.
    """
    if part not in PARTS:
        raise ValueError(f'part must be one of {PARTS}, got {part!r}')
    require_replknet_backbone(cfg.model.get('backbone', {}).get('type'), config)
    if part == 'backbone':
        backbone = build_backbone(cfg)
        load_backbone_checkpoint(backbone, checkpoint)
        return Exported(backbone, 'backbone').eval()
    model = load_checked_model(cfg, config, checkpoint)
    return Exported(model, 'logits' if hasattr(model, 'decode_head') else 'features').eval()


def use_mmseg_heads(module):
    """Turn our fast training heads back into the mmseg classes they extend (same parameters); how many.

    Their resizes are matrices built from concrete sizes (``replk_mm.models.heads.resize``), which fixes the
    exported graph to one input size; mmseg's heads resize with ``F.interpolate``, which exports with
    symbolic sizes.
    """
    from mmseg.models.decode_heads import FCNHead, UPerHead

    from replk_mm.models.heads import FastFCNHead, FastUPerHead
    plain = {FastUPerHead: UPerHead, FastFCNHead: FCNHead}
    heads = [m for m in module.modules() if type(m) in plain]
    for head in heads:
        head.__class__ = plain[type(head)]
    return len(heads)


def to_deploy_form(exported):
    """Merge the large kernels, force PyTorch's depthwise conv, make heads and pooling exportable; the counts."""
    return dict(merged=switch_to_deploy(exported), torch_dwconvs=force_torch_dwconv(exported),
                heads=use_mmseg_heads(exported), pools=replace_adaptive_pools(exported))


def input_metadata(cfg):
    """How a caller prepares the input: the data preprocessor's mean, std and channel order."""
    preprocessor = cfg.model.get('data_preprocessor') or {}
    return dict(mean=list(preprocessor.get('mean') or []), std=list(preprocessor.get('std') or []),
                bgr_to_rgb=bool(preprocessor.get('bgr_to_rgb', False)), layout='NCHW float32',
                normalised='(image - mean) / std, after bgr_to_rgb')


def check_output_path(out, inputs):
    """Refuse to overwrite an input, a directory as the output, or a folder that cannot be written."""
    for source in inputs:
        if same_file(out, source):
            raise ValueError(f'refusing to overwrite the input {source} with the output {out}')
    if osp.isdir(out):
        raise ValueError(f'{out} is a directory; give the path of the .onnx file to write')
    check_writable_dir(osp.dirname(osp.abspath(out)))


def export_to_onnx(exported, inputs, path, output_names, dynamic):
    """``torch.onnx.export`` (torch.export-based) of ``exported`` at ``inputs``; batch, height and width
    become symbolic with ``dynamic``."""
    dynamic_shapes = None
    if dynamic:
        dims = {0: torch.export.Dim('batch', min=1, max=1024), 2: torch.export.Dim('height', min=32, max=16384),
                3: torch.export.Dim('width', min=32, max=16384)}
        dynamic_shapes = {INPUT_NAME: dims}
    # onnx_ir warns once per attribute given as an empty list (typed INTS, correctly): dozens of lines for a 31B.
    ir_logger = logging.getLogger('onnx_ir')
    level = ir_logger.level
    ir_logger.setLevel(logging.ERROR)
    try:
        torch.onnx.export(exported, (inputs, ), path, dynamo=True, input_names=[INPUT_NAME],
                          output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                          external_data=False, verbose=False)
    finally:
        ir_logger.setLevel(level)


def graph_summary(path):
    """What the checks read from an ONNX file: ``custom_ops`` (outside the standard domain), ``large_kernels``
    (kernel sizes of the Conv nodes larger than 7x7) and ``input_shape`` (ints, or names where symbolic)."""
    import onnx
    graph = onnx.load(path).graph
    custom = sorted({f'{node.domain}::{node.op_type}' for node in graph.node if node.domain not in ('', 'ai.onnx')})
    kernels = []
    for node in graph.node:
        if node.op_type == 'Conv':
            shape = next((list(a.ints) for a in node.attribute if a.name == 'kernel_shape'), [])
            if shape and min(shape) > 7:
                kernels.append('x'.join(map(str, shape)))
    dims = graph.input[0].type.tensor_type.shape.dim
    return dict(custom_ops=custom, large_kernels=kernels,
                input_shape=[d.dim_param if d.HasField('dim_param') else d.dim_value for d in dims])


def onnxruntime_outputs(path, inputs):
    """The ONNX file's outputs for ``inputs`` on onnxruntime's CPU provider, as tensors."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return [torch.from_numpy(out) for out in session.run(None, {INPUT_NAME: inputs.numpy()})]


def check_shapes(shape, dynamic):
    """Input shapes the export is checked at: the export shape, and with ``dynamic`` another one (batch 2,
    height and width not multiples of 32)."""
    height, width = shape
    shapes = [(1, 3, height, width)]
    if dynamic:
        shapes.append((2, 3, height + 40, width + 24))
    return shapes


class ExportCheckError(RuntimeError):
    """The exported file failed a check (outputs, ops, large kernels, dynamic axes); nothing was written."""


def export_checked(exported, out, shape=(512, 512), dynamic=False, metadata=None, tolerance=TOLERANCE, log=print):
    """Export ``exported`` (unmerged, as :func:`exportable_model` returns it) in deploy form to ``out``.

    PyTorch's reference outputs come from the model as loaded (before merging); onnxruntime runs the file on
    the CPU at each of :func:`check_shapes`. The file appears at ``out`` only if every relative error is
    within ``tolerance``, the graph holds standard ops only, one Conv node per merged large kernel, and (with
    ``dynamic``) symbolic batch, height and width; else :class:`ExportCheckError` is raised, nothing written.
    Returns the report dict (errors per shape, counts, Conv kernel sizes).
    """
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(*s, generator=generator) for s in check_shapes(shape, dynamic)]
    with torch.no_grad():
        references = [exported(x) for x in inputs]
    counts = to_deploy_form(exported)
    names = exported.output_names(inputs[0])
    large_kernels = sum(1 for name, _ in exported.named_parameters() if name.endswith('lkb_reparam.weight'))
    report = dict(counts, outputs=names, large_kernels=large_kernels, errors=[])

    def write(tmp):
        export_to_onnx(exported, inputs[-1] if dynamic else inputs[0], tmp, names, dynamic)
        graph = graph_summary(tmp)
        if graph['custom_ops']:
            raise ExportCheckError(f'the exported graph holds non-standard ops {graph["custom_ops"]}; '
                                   'nothing written')
        if len(graph['large_kernels']) != large_kernels:
            raise ExportCheckError(f'the exported graph has {len(graph["large_kernels"])} large-kernel Conv nodes '
                                   f'({graph["large_kernels"]}), the deploy model {large_kernels} merged '
                                   'large-kernel convs; nothing written')
        fixed = [axis for axis, size in zip('NCHW', graph['input_shape']) if isinstance(size, int) and axis != 'C']
        if dynamic and fixed:
            raise ExportCheckError(f'asked for a dynamic graph, the exporter fixed the input axes {fixed} to '
                                   f'{graph["input_shape"]}: the model\'s forward turns them into Python '
                                   'numbers; nothing written')
        report['conv_kernels'] = graph['large_kernels']
        if metadata:
            add_metadata(tmp, metadata)
        for x, reference in zip(inputs, references):
            outputs = onnxruntime_outputs(tmp, x)
            reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
            error = relative_error(outputs, reference)
            report['errors'].append((tuple(x.shape), error))
            log(f'onnxruntime vs PyTorch at input {"x".join(map(str, x.shape))}: relative error {error:.2e}')
        worst = max(error for _, error in report['errors'])
        if worst > tolerance:
            raise ExportCheckError(f'relative error {worst:.2e} exceeds {tolerance:g}; nothing written')

    write_atomic(out, write)
    return report


def add_metadata(path, metadata):
    """Store ``metadata`` (JSON values) in the ONNX file's ``metadata_props``, keys prefixed ``replk_mm.``."""
    import onnx
    model = onnx.load(path)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f'replk_mm.{key}', json.dumps(value)
    onnx.save(model, path)


def onnx_metadata(cfg, config, checkpoint, exported):
    """What the ONNX file records about itself: the input's normalisation, the output, classes, sources."""
    dataset_meta = getattr(exported.model, 'dataset_meta', None) or {}
    return dict(input=input_metadata(cfg), output=Exported.KINDS[exported.kind],
                classes=list(dataset_meta.get('classes') or []), config=osp.basename(config),
                checkpoint=osp.basename(checkpoint))
