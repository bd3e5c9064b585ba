"""Systems giellm is compared with: GiNZA (classic NER) and few-shot prompting of any
OpenAI-compatible endpoint. Each returns predictions as unified records for the same metrics."""
