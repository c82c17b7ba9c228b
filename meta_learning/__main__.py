import sys

from meta_learning.train import main

sys.exit(main())
