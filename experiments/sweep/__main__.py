import sys

from peftbench.experiments.sweep.size import main

sys.exit(main())
