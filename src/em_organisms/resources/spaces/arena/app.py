"""The EM Organisms Arena (Hugging Face Space entry point): `em-organisms space`, configured by
arena.yaml beside this file. Locally: `python spaces/arena/app.py --organism ORGANISM_DIR`."""

import sys
from pathlib import Path

from em_organisms.space import main

if __name__ == "__main__":
    sys.exit(main(default_config=Path(__file__).with_name("arena.yaml")))
