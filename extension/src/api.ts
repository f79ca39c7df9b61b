// Requests to the adaptlab server extension. ServerConnection adds the token or the XSRF
// header the server checks, so every call here is authenticated like JupyterLab's own.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IDomain {
  name: string;
  title: string;
  description: string;
  icon: string;
  tasks: string[];
  default_strategy: string;
}

export interface IPluginError {
  plugin: string;
  error: string;
}

export interface IDomainsReply {
  domains: IDomain[];
  errors: IPluginError[];
}

export interface IRun {
  path: string;
  name: string;
  status: string;
  active?: boolean;
  error?: string;
  domain?: string;
  strategy?: string;
  strategy_options?: Record<string, unknown>;
  monitor?: string;
  metric?: number | null;
  baseline_metric?: number | null;
  trainable_percent?: number | null;
  trainable_params?: number | null;
  training_memory?: number | null;
  seconds_per_epoch?: number | null;
  notebook?: string | null;
  report?: boolean;
}

export interface IRunsReply {
  runs: IRun[];
  truncated: boolean;
}

export interface ITutorial {
  name: string;
  title: string;
  paper: string;
  domain: string;
}

export interface ITutorialsReply {
  tutorials: ITutorial[];
}

export interface INewTutorial {
  tutorial: string;
  path: string;
  unique?: boolean;
}

export interface INewNotebook {
  domain: string;
  path: string;
  unique?: boolean;
  parameters?: Record<string, unknown>;
}

function endpoint(name: string, settings: ServerConnection.ISettings): string {
  return URLExt.join(settings.baseUrl, 'adaptlab', name);
}

export async function requestAPI<T>(name: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const response = await ServerConnection.makeRequest(endpoint(name, settings), init, settings);
  const text = await response.text();
  let data: any = text;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    // not JSON: keep the text for the error message
  }
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response, data?.message || text || response.statusText);
  }
  return data as T;
}

export function getDomains(): Promise<IDomainsReply> {
  return requestAPI<IDomainsReply>('domains');
}

export function getRuns(): Promise<IRunsReply> {
  return requestAPI<IRunsReply>('runs');
}

export function createNotebook(request: INewNotebook): Promise<{ path: string }> {
  return requestAPI<{ path: string }>('notebooks', {
    method: 'POST',
    body: JSON.stringify(request)
  });
}

export function getTutorials(): Promise<ITutorialsReply> {
  return requestAPI<ITutorialsReply>('tutorials');
}

export function createTutorial(request: INewTutorial): Promise<{ path: string }> {
  return requestAPI<{ path: string }>('notebooks', {
    method: 'POST',
    body: JSON.stringify(request)
  });
}

export function reportUrl(runPath: string): string {
  const settings = ServerConnection.makeSettings();
  return endpoint('report', settings) + URLExt.objectToQueryString({ run: runPath });
}
