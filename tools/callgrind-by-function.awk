# Folds callgrind_annotate's file:function lines into one line per function, for the
# profile scripts:
#
#   callgrind_annotate --auto=no FILE | awk -v fold=sum -f tools/callgrind-by-function.awk
#
# Inlined code is reported under the file it came from, so self costs of one function
# are spread over several lines and add up (fold=sum); an inclusive cost
# (--inclusive=yes) is repeated on each of them, so the largest is the function's
# (fold=max). Frames that hold the whole run (main and what calls it) are left out.
# Prints "cost  function" lines, unsorted.
/PROGRAM TOTALS/ { whole = $1; gsub(",", "", whole); whole += 0 }
/file:function/ { on = 1; next }
on && $1 ~ /^[0-9,]+$/ {
    cost = $1; gsub(",", "", cost); cost += 0
    name = $0; sub(/^[^:]*:/, "", name); sub(/ \[.*$/, "", name)
    if (fold == "sum") total[name] += cost
    else if (cost > total[name]) total[name] = cost
}
END { for (name in total) if (total[name] < whole) printf "%15.0f  %s\n", total[name], name }
