"""Human-facing views of results: the console summary now; plots and traces come with the report issue."""
