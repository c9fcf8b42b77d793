/** A live line chart (uPlot) that follows the width of its box and the colour scheme. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Series {
  readonly label: string;
  /** A CSS custom property of admin.css, e.g. `--series-1`. */
  readonly colour: string;
}

/** `data[0]` is time in seconds; one more array per series. */
export function LiveChart(p: {
  title: string;
  series: readonly Series[];
  data: readonly (readonly number[])[];
  unit: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  const key = p.series.map((s) => s.label).join('|');
  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const css = getComputedStyle(document.documentElement);
    const v = (name: string): string => css.getPropertyValue(name).trim();
    const axis = { stroke: v('--muted'), grid: { stroke: v('--line'), width: 1 } };
    plot.current = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: 200,
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] },
        },
        axes: [
          axis,
          { ...axis, size: 56, values: (_u, ticks) => ticks.map((t) => `${t}${p.unit}`) },
        ],
        series: [
          {},
          ...p.series.map((s) => ({
            label: s.label,
            stroke: v(s.colour),
            width: 2,
            points: { show: false },
          })),
        ],
      },
      p.data as uPlot.AlignedData,
      el,
    );
    const resize = new ResizeObserver(() =>
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: 200 }),
    );
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = undefined;
    };
  }, [key]);
  useEffect(() => {
    plot.current?.setData(p.data as uPlot.AlignedData);
  }, [p.data]);
  return <div class="chart" ref={box} role="img" aria-label={p.title} />;
}
