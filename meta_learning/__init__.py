"""Stage 1 of Zakharov et al. 2019: meta-learning of the embedder, generator and discriminator on episodes.

Entry point: ``python -m meta_learning.train --preset small data.root=DIR train.out_dir=runs/x`` (or torchrun).
"""
