SELECT "a"":b", "c -- :no", U&"d\0061t :no" FROM "t/*" WHERE x = :yes -- :no
