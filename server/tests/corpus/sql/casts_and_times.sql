SELECT '10:30', x::text, a:b, :from::date, '日本語 :no' || :to, :naïve
