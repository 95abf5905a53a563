"""Shadow-model membership inference attack: python run_attack.py [--cfg FILE] [KEY VALUE ...]"""

import argparse
import os
import sys

from utils.errors import RunError, Terminated, UsageError, sigterm_interrupts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cfg", default="", help="YAML preset (keys that differ from defaults)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding it")
    args = parser.parse_args(argv)
    try:
        with sigterm_interrupts():
            from configs.config import build_cfg
            from engine.run import run

            cfg, derived = build_cfg(args.cfg, args.opts)
            cfg.freeze()
            run(cfg, derived)
    except (UsageError, RunError) as e:
        if os.environ.get("MIA_DEBUG"):
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # always one line
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): exit 128 + signal
        stopped = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{stopped}: rerun the same command (same OUTPUT_DIR) to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
