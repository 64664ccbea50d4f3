"""tools/benchmark_dwconv.py: the shapes it times (the timing itself needs a GPU)."""
import pytest

from conftest import load_tool

dwconv_tool = load_tool('benchmark_dwconv')


def test_detection_shapes_are_every_conv_of_replknet31b_at_800x1216():
    shapes = dwconv_tool.parse_shapes(['detection'])
    # Stride 4, 8, 16, 32 maps of a 2 x 3 x 800 x 1216 input; each stage's large kernel and the 5x5 beside it.
    assert shapes == [(2, 128, 200, 304, 31), (2, 128, 200, 304, 5), (2, 256, 100, 152, 29), (2, 256, 100, 152, 5),
                      (2, 512, 50, 76, 27), (2, 512, 50, 76, 5), (2, 1024, 25, 38, 13), (2, 1024, 25, 38, 5)]


def test_explicit_shapes_and_the_default():
    assert dwconv_tool.parse_shapes(['1,2,30,40,7', 'detection'])[:2] == [(1, 2, 30, 40, 7), (2, 128, 200, 304, 31)]
    assert dwconv_tool.parse_shapes(None) == dwconv_tool.SHAPES
    assert dwconv_tool.SHAPES[0] == (64, 128, 56, 56, 31)


@pytest.mark.parametrize('spec', ['1,2,30,40', '1,2,30,40,6', '1,2,0,40,7', 'a,b,c,d,e'])
def test_a_bad_shape_names_the_argument_and_what_was_expected(spec):
    with pytest.raises(SystemExit, match=rf"--shapes: expected 'N,C,H,W,K' \(positive integers, K odd\) or "
                                         rf"'detection', got '{spec}'"):
        dwconv_tool.parse_shapes([spec])
