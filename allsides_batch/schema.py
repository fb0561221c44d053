"""The columns of the tables the package reads and writes: the scorer's input (logical names, mapped to
the file's own with --*-column), its score rows and its quarantine rows. One owner: every module that
names a score or quarantine column takes it from here (tests/test_architecture.py checks it).

pyarrow only: the scorer, training and analysis all import this module.
"""

from __future__ import annotations

import pyarrow as pa

# ------------------------------------------------------------------------------------------ input columns
# Logical input names; `Columns` (config.py) maps each to the input file's column. source_url has no flag.
ID, SOURCE, TEXT, TITLE, DATE, URL, SOURCE_URL = "id", "source", "text", "title", "date", "url", "source_url"
INPUT_REQUIRED = (ID, SOURCE, TEXT)
INPUT_COLUMNS = (ID, SOURCE, TEXT, TITLE, DATE, URL, SOURCE_URL)
URL_COLUMNS = (URL, SOURCE_URL)  # where an article's outlet domain is read from, in this order

# ------------------------------------------------------------------------------------------ score columns
LABEL = "label"
P_LEFT, P_CENTER, P_RIGHT = "p_left", "p_center", "p_right"
PROB_COLUMNS = (P_LEFT, P_CENTER, P_RIGHT)  # in LABELS order
BIAS_SCORE = "bias_score"  # p_right − p_left
CONFIDENCE = "confidence"  # the largest probability
N_TOKENS, TRUNCATED = "n_tokens", "truncated"
MODEL_ID, RUN_ID, SCORED_AT = "model_id", "run_id", "scored_at"
RUN_TIME = pa.timestamp("us", tz="UTC")

SCORES_SCHEMA = pa.schema([
    (ID, pa.string()), (SOURCE, pa.string()), (DATE, pa.string()), (LABEL, pa.string()),
    (P_LEFT, pa.float32()), (P_CENTER, pa.float32()), (P_RIGHT, pa.float32()),
    (BIAS_SCORE, pa.float32()), (CONFIDENCE, pa.float32()), (N_TOKENS, pa.int32()),
    (TRUNCATED, pa.bool_()), (MODEL_ID, pa.string()), (RUN_ID, pa.string()),
    (SCORED_AT, RUN_TIME), (URL, pa.string()), (SOURCE_URL, pa.string()),
])

# ------------------------------------------------------------------------------------- quarantine columns
REASON, INPUT_FILE, ROW_INDEX = "reason", "input_file", "row_index"
# Input columns copied (as strings) into quarantine rows, in this order, when the input has them.
QUARANTINE_INPUT = (ID, SOURCE, TITLE, TEXT, DATE, URL, SOURCE_URL)
QUARANTINE_TAIL = [(REASON, pa.string()), (INPUT_FILE, pa.string()), (ROW_INDEX, pa.int64()),
                   (MODEL_ID, pa.string()), (RUN_ID, pa.string()), (SCORED_AT, RUN_TIME)]
# Every quarantine part has every column (null where the input lacks it), so parts read as one dataset.
QUARANTINE_SCHEMA = pa.schema([(k, pa.string()) for k in QUARANTINE_INPUT] + QUARANTINE_TAIL)
