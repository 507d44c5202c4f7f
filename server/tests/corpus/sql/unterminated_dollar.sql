SELECT $q$ :x $Q$
