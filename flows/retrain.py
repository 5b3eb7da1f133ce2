"""Run the retrain flow once: ``python flows/retrain.py [PROJECT]`` (same as ``unfreeze retrain``).

The flow itself lives in ``src/unfreeze/ops/retrain.py`` so that served deployments can import it
by module path; this file only sets the quiet-offline defaults and calls it.
"""

import sys

if __name__ == "__main__":
    from unfreeze.cli import main

    sys.exit(main(["retrain", "--project", sys.argv[1] if len(sys.argv) > 1 else "."]))
