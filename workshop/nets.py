"""Lesson 03 · The convolutional network: the networks, as the lesson writes them out.

    TutorialNet, conv_bn, WorkshopNet

Made from the cells tagged 'export' in notebooks/03-cnn.ipynb by tools/export_lessons.py:
edit the lesson, then run that tool; tests fail while the two disagree.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# lesson 03, The tutorial's network: two convolutions, then three linear layers
class TutorialNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


# lesson 03, The workshop's network: batch normalisation, more channels, pooling early
def conv_bn(c_in, c_out, pool=True):
    layers = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


# lesson 03, The workshop's network: batch normalisation, more channels, pooling early
class WorkshopNet(nn.Module):
    def __init__(self, widths=(24, 48, 96, 192), num_classes=10):
        super().__init__()
        self.block1 = conv_bn(3, widths[0])
        self.block2 = conv_bn(widths[0], widths[1])
        self.block3 = conv_bn(widths[1], widths[2])
        self.block4 = conv_bn(widths[2], widths[3], pool=False)
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        x = torch.amax(self.block4(x), dim=(2, 3))
        return self.head(x)
