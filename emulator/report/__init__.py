"""Human-facing views of results: the console summary, the HTML report with its plots, the step trace."""
