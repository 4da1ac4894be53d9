"""`python -m bnexp.report RESULTS_DIR` is `bnexp-report RESULTS_DIR`."""
from bnexp.report.cli import main

main()
