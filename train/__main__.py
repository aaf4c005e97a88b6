"""`python -m crosstune.train --config X` (and `accelerate launch -m crosstune.train --config X`) runs the train command."""
from __future__ import annotations

import sys

from crosstune.train.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if argv[:1] and argv[0] in {"mine", "train", "export", "evaluate", "rerank", "serve", "demo", "plot",
                                                    "adapt", "choose"}
                  else ["train", *argv]))
