"""difflm: continuous diffusion language models with fine-grained control.

import difflm
pipe = difflm.load("runs/demo")
pipe.sample(4, sampler="ddpm", steps=50)
"""

from difflm.config import Config, load_config
from difflm.diffusion.schedules import NoiseSchedule, make_schedule
from difflm.pipeline import Pipeline, load

__all__ = ["Config", "NoiseSchedule", "Pipeline", "load", "load_config", "make_schedule"]
