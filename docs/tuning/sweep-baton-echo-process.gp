set terminal svg size 1350,740 dynamic font 'sans,11'
set output 'docs/tuning/sweep-baton-echo-process.svg'
set datafile separator ','
set logscale x 2
set xlabel 'batch size'
set grid
set key below font ',9'
set xtics ("1" 1, "4" 4, "16" 16, "64" 64, "253" 253)
set xrange [0.769231:328.9]
set multiplot layout 2,3 title "baton-echo (process), 2026-12-01: echo, 2 cores, Linux 6.18.44-fc-v669, 2 workers, one exchange per connection"
set title 'conns/s, 8 clients'
unset logscale y
set yrange [0:*]
plot 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'size' ? $7 : NaN):8 with linespoints title 'size', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'adaptive' ? $7 : NaN):8 with linespoints title 'adaptive', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'delay:200' ? $7 : NaN):8 with linespoints title 'delay:200', 17471.3 with lines dashtype 2 lc rgb 'black' title 'defaults'
set title 'p99 latency (us, log), 8 clients'
set logscale y
set yrange [*:*]
plot 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'size' ? $7 : NaN):10 with linespoints title 'size', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'adaptive' ? $7 : NaN):10 with linespoints title 'adaptive', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'delay:200' ? $7 : NaN):10 with linespoints title 'delay:200', 1056 with lines dashtype 2 lc rgb 'black' title 'defaults'
set title 'server CPU per exchange (us), 8 clients'
unset logscale y
set yrange [0:*]
plot 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'size' ? $7 : NaN):12 with linespoints title 'size', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'adaptive' ? $7 : NaN):12 with linespoints title 'adaptive', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==8 && strcol(5) eq '-' && strcol(6) eq 'delay:200' ? $7 : NaN):12 with linespoints title 'delay:200', 45.8294 with lines dashtype 2 lc rgb 'black' title 'defaults'
set title 'conns/s, 64 clients'
unset logscale y
set yrange [0:*]
plot 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'size' ? $7 : NaN):8 with linespoints title 'size', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'adaptive' ? $7 : NaN):8 with linespoints title 'adaptive', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'delay:200' ? $7 : NaN):8 with linespoints title 'delay:200', 22698.2 with lines dashtype 2 lc rgb 'black' title 'defaults'
set title 'p99 latency (us, log), 64 clients'
set logscale y
set yrange [*:*]
plot 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'size' ? $7 : NaN):10 with linespoints title 'size', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'adaptive' ? $7 : NaN):10 with linespoints title 'adaptive', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'delay:200' ? $7 : NaN):10 with linespoints title 'delay:200', 7808 with lines dashtype 2 lc rgb 'black' title 'defaults'
set title 'server CPU per exchange (us), 64 clients'
unset logscale y
set yrange [0:*]
plot 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'size' ? $7 : NaN):12 with linespoints title 'size', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'adaptive' ? $7 : NaN):12 with linespoints title 'adaptive', 'docs/tuning/sweep-baton-echo-process.csv' using ($3==64 && strcol(5) eq '-' && strcol(6) eq 'delay:200' ? $7 : NaN):12 with linespoints title 'delay:200', 37.2815 with lines dashtype 2 lc rgb 'black' title 'defaults'
unset multiplot
