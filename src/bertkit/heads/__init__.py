"""Task heads on the body: sequence and token classifiers, their predictors and the cross-encoder reranker."""
