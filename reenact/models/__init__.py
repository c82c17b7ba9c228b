"""Networks of Zakharov et al. 2019: embedder E, generator G, projection discriminator D (pure nn.Modules), and
:func:`load`, which builds them from a meta-learned checkpoint (:class:`BaseModel`)."""
from __future__ import annotations

from reenact.models.base_model import BaseModel, load
from reenact.models.build import build_discriminator, build_embedder, build_generator, count_params
from reenact.models.discriminator import Discriminator
from reenact.models.embedder import Embedder
from reenact.models.generator import Generator, GeneratorOutput
from reenact.models.warp_generator import WarpGenerator

__all__ = ["BaseModel", "load", "Embedder", "Generator", "GeneratorOutput", "WarpGenerator", "Discriminator",
           "build_embedder", "build_generator", "build_discriminator", "count_params"]
