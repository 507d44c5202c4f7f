SELECT id, status, note FROM orders WHERE owner = :user AND status = :status /* was: /* v1 */ AND note <> :note */ ORDER BY id
