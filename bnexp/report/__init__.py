"""From a results folder to tables, figures and a report page: `bnexp-report RESULTS_DIR`."""
