// Icons: each domain ships its own SVG (DomainSpec.icon); the runs panel has one of its own.
import { LabIcon } from '@jupyterlab/ui-components';

const RUNS_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
<path class="jp-icon3" fill="#616161" d="M3 3h2v16h16v2H3z"/>
<path class="jp-icon3" fill="#616161" d="M7 15.6l4.2-4.9 3 2.6L19.4 7l1.5 1.3-6.5 7.6-3-2.6-2.9 3.4z"/>
</svg>`;

const FALLBACK_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
<circle class="jp-icon3" fill="#616161" cx="12" cy="12" r="4"/>
<path class="jp-icon3" fill="#616161" d="M11 2h2v5h-2zM11 17h2v5h-2zM2 11h5v2H2zM17 11h5v2h-5z"/>
</svg>`;

export const runsIcon = new LabIcon({ name: 'adaptlab:runs', svgstr: RUNS_SVG });

const domainIcons = new Map<string, LabIcon>();

export function domainIcon(name: string, svg: string): LabIcon {
  let icon = domainIcons.get(name);
  if (!icon) {
    const usable = svg && svg.trim().startsWith('<svg') ? svg : FALLBACK_SVG;
    icon = new LabIcon({ name: `adaptlab:domain-${name}`, svgstr: usable });
    domainIcons.set(name, icon);
  }
  return icon;
}
