"""Datasets for the peft workload: built-in offline corpora and users' CSV / JSONL files.

Pipeline (all of it numpy + the tokenizer; no torch here), one module a stage:

1. :mod:`~autopeft.trials.data.sources`: ``DataSpec`` says where the examples are and which
   columns hold text and label; ``data_spec`` resolves a built-in name or a file path
   (``check_server_path``) to one.
2. :mod:`~autopeft.trials.data.readers`: ``read_examples`` parses the file and checks it; bad
   data raises ``InvalidConfig`` naming the file and the column (missing column, empty file, a
   label outside the declared set, bytes that do not decode).
3. :mod:`~autopeft.trials.data.tokenized`: ``load_tokenized`` tokenises every example once
   (truncated to ``max_length``, not padded) and caches the result on disk under
   ``cache_dir()``, keyed by a content hash of the data, the column spec, the tokenizer files and
   ``max_length``; ``TokenizedData.batch`` pads a batch (to its longest example or to
   ``max_length``).
4. :mod:`~autopeft.trials.data.splits`: ``split_with_test`` makes the fixed train / validation /
   test split and ``stratified_take`` subsamples the training pool for ``max_train`` and for a
   ``fraction`` budget.

This package's namespace holds the names the trainers, the API and the workers use.
"""

from autopeft.trials.data.readers import check_header, read_examples
from autopeft.trials.data.sources import (
    BUILTIN_DATASETS,
    DATA_DIRS_ENV,
    DataSpec,
    check_server_path,
    data_roots,
    data_spec,
    is_text_encoding,
    label_str,
)
from autopeft.trials.data.splits import split_indices, split_with_test, stratified_take
from autopeft.trials.data.tokenized import (
    TokenizedData,
    cache_dir,
    load_tokenized,
    pad_token_id,
)

__all__ = [
    "BUILTIN_DATASETS",
    "DATA_DIRS_ENV",
    "DataSpec",
    "TokenizedData",
    "cache_dir",
    "check_header",
    "check_server_path",
    "data_roots",
    "data_spec",
    "is_text_encoding",
    "label_str",
    "load_tokenized",
    "pad_token_id",
    "read_examples",
    "split_indices",
    "split_with_test",
    "stratified_take",
]
