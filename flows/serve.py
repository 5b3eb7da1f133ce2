"""Serve the retrain flow on a schedule: ``python flows/serve.py "0 3 * * *" [PROJECT]``.

Same as ``unfreeze serve --cron "0 3 * * *"``; needs PREFECT_API_URL (a running server).
"""

import sys

if __name__ == "__main__":
    from unfreeze.cli import main

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    project = sys.argv[2] if len(sys.argv) > 2 else "."
    sys.exit(main(["serve", "--cron", sys.argv[1], "--project", project]))
