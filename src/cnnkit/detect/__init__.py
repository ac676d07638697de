"""Object detection: the box operators (ops), evaluation with pycocotools (evaluate)."""
