"""augment: generative data augmentation for scarce labelled image datasets.

prepare -> train (conditional GAN / VAE) -> generate -> filter (discriminator confidence)
-> crossfit (how much synthetic data, if any) -> merge -> evaluate (does the synthetic data beat real +
classical augmentation?).
"""

__version__ = "0.1.0"
