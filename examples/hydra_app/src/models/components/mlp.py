from torch import nn


class SimpleDenseNet(nn.Module):
    def __init__(self, input_size: int = 64, hidden: int = 32, output_size: int = 10, dropout: float = 0.0):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(input_size, hidden), nn.ReLU(), nn.Dropout(dropout),
                                   nn.Linear(hidden, output_size))

    def forward(self, x):
        return self.model(x)
